// Collects log lines and hands them on in batches (at BATCH_BYTES, every FLUSH_MS, and on
// flush()): a flow line per request must not cost a write or a message per request. A pino
// destination: pino writes each line with write().

const BATCH_BYTES = 16 * 1024
const FLUSH_MS = 250

export class LineBatcher {
  private batch = ''
  private readonly timer: NodeJS.Timeout

  constructor(private readonly deliver: (text: string) => void) {
    this.timer = setInterval(() => this.flush(), FLUSH_MS)
    this.timer.unref()
  }

  write(line: string): void {
    this.batch += line
    if (this.batch.length >= BATCH_BYTES) this.flush()
  }

  flush(): void {
    if (this.batch === '') return
    const text = this.batch
    this.batch = ''
    this.deliver(text)
  }
}
