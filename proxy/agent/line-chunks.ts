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
  /** A line too large for a chunk, being written. */
  private alone: Buffer<ArrayBuffer> | null = null
  private readonly timer: NodeJS.Timeout

  constructor(private readonly deliver: ChunkHandler) {
    this.timer = setInterval(() => this.flush(), FLUSH_MS)
    this.timer.unref()
  }

  /** A line as a string (pino's lines). */
  write(line: string): void {
    // A UTF-16 unit takes at most 3 bytes.
    const buf = this.reserve(line.length * 3)
    this.commit(this.lineStart + buf.write(line, this.lineStart))
  }

  /**
   * Room for one line of at most `max` bytes, to be written from `lineStart` and then committed
   * (commit(end)). A line that may not fit starts the next chunk; one larger than a chunk goes alone.
   */
  reserve(max: number): Buffer {
    if (max > CHUNK_BYTES - this.used) {
      this.flush()
      if (max > CHUNK_BYTES) return (this.alone = Buffer.allocUnsafeSlow(max))
    }
    return this.chunk
  }

  get lineStart(): number {
    return this.alone === null ? this.used : 0
  }

  commit(end: number): void {
    const alone = this.alone
    if (alone === null) {
      this.used = end
      this.lines++
      return
    }
    this.alone = null
    this.deliver(ownBytes(alone, end), 1)
  }

  flush(): void {
    if (this.used === 0) return
    let full: Buffer<ArrayBuffer>
    // Mostly empty (the timer's flush of a quiet thread): its bytes are copied out, so what the
    // flow feed keeps of a few lines does not hold a whole chunk's memory.
    if (this.used < CHUNK_BYTES / 2) full = ownBytes(this.chunk, this.used)
    else {
      full = this.chunk.subarray(0, this.used)
      this.chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES)
    }
    const lines = this.lines
    this.used = this.lines = 0
    this.deliver(full, lines)
  }
}

/** The first `length` bytes in memory of their own and of their size. */
function ownBytes(from: Buffer<ArrayBuffer>, length: number): Buffer<ArrayBuffer> {
  const bytes = Buffer.allocUnsafeSlow(length)
  from.copy(bytes, 0, 0, length)
  return bytes
}
