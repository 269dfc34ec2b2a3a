// A thread's log lines gathered as UTF-8 bytes in chunks, each handed on whole when full, every
// FLUSH_MS, and on flush(): a flow line per request must cost neither a write nor a message
// per request, and a chunk crosses to the thread that writes it without a copy (its memory is
// transferred) and is written as it is (no second encoding). A pino destination: pino writes
// each line with write().

const CHUNK_BYTES = 64 * 1024
const FLUSH_MS = 250

/**
 * Whole lines, and how many. Its memory (an ArrayBuffer of its own, at most twice the bytes) is
 * the receiver's: a chunk is never reused.
 */
export type ChunkHandler = (chunk: Buffer<ArrayBuffer>, lines: number) => void

export class LineChunks {
  private chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES)
  private used = 0
  private lines = 0
  private readonly timer: NodeJS.Timeout

  constructor(private readonly deliver: ChunkHandler) {
    this.timer = setInterval(() => this.flush(), FLUSH_MS)
    this.timer.unref()
  }

  write(line: string): void {
    // A UTF-16 unit takes at most 3 bytes: a line that may not fit starts the next chunk.
    if (line.length * 3 > CHUNK_BYTES - this.used) {
      this.flush()
      if (line.length * 3 > CHUNK_BYTES) return this.deliver(ownBytes(line), 1)
    }
    this.used += this.chunk.write(line, this.used)
    this.lines++
  }

  flush(): void {
    if (this.used === 0) return
    let full: Buffer<ArrayBuffer>
    if (this.used < CHUNK_BYTES / 2) {
      // Mostly empty (the timer's flush of a quiet thread): its bytes are copied out, so what the
      // flow feed keeps of a few lines does not hold a whole chunk's memory.
      full = Buffer.allocUnsafeSlow(this.used)
      this.chunk.copy(full, 0, 0, this.used)
    } else {
      full = this.chunk.subarray(0, this.used)
      this.chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES)
    }
    const lines = this.lines
    this.used = this.lines = 0
    this.deliver(full, lines)
  }
}

/** A string's bytes in memory of their own (never a slice of Buffer's shared pool). */
function ownBytes(line: string): Buffer<ArrayBuffer> {
  const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(line))
  bytes.write(line)
  return bytes
}
