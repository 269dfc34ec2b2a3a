// Everything the HTTP/1.1 proxy writes to one socket. A plain TCP socket is written the way
// node:net writes it underneath, straight to its native handle (libuv tries the write at once
// and queues what the kernel does not take), without net.Socket's Writable: that state machine,
// its buffered entries, a write request object per write and a nextTick per completion were
// 3% of a proxied request's CPU here. What one read's callbacks write is collected (`hold`) and
// leaves in one writev (`release`). Node's calling convention for the handle is in
// native-stream.ts.
// A TLS socket, or one still connecting, or one whose Writable still holds bytes, is written
// through Writable as usual; once a socket is written directly it never goes back, so bytes keep
// their order: libuv sends queued writes, and a later end()'s shutdown, in the order given.

import type { Socket } from 'node:net'
import { getSystemErrorName } from 'node:util'
import { lastWriteWasAsync, type NativeStream, nativeStream, type WriteReq, WriteWrap } from './native-stream.js'
import { RawSocket } from './raw-socket.js'

/** Past this many bytes queued (written but not yet taken by the kernel) write() says wait, as Writable's default. */
const HIGH_WATER = 16 * 1024

export class SocketWriter {
  /** Set once the socket is written straight to its handle (from then on, always). */
  private handle: NativeStream | null = null
  private req: WriteReq | null = null
  private holding = false
  /** What is held for one write: [data, 'latin1' | 'buffer', ...], and its bytes. */
  private held: Array<string | Buffer> = []
  private heldBytes = 0
  /** This writer corked Writable while holding (before the socket could be written directly). */
  private corked = false
  private waiter: (() => void) | null = null

  constructor(readonly socket: Socket | RawSocket) {}

  /** Holds what is written until release(), to leave in one write. */
  hold(): void {
    this.holding = true
  }

  release(): void {
    this.holding = false
    if (this.corked) {
      this.corked = false
      this.viaWritable.uncork()
    }
    if (this.held.length > 0) this.flush()
  }

  /** Latin1 strings or bytes; false when the peer is behind (whenDrained says when it caught up). */
  write(data: string | Buffer): boolean {
    if (!this.directNow()) {
      if (this.holding && !this.corked) {
        this.corked = true
        this.viaWritable.cork()
      }
      return this.viaWritable.write(data, 'latin1')
    }
    if (!this.holding) {
      this.send(data)
      return this.handle!.writeQueueSize < HIGH_WATER
    }
    this.held.push(data, typeof data === 'string' ? 'latin1' : 'buffer')
    this.heldBytes += data.length
    return this.heldBytes + this.handle!.writeQueueSize < HIGH_WATER
  }

  /** Calls `fn` once the peer has caught up, after a write returned false. */
  whenDrained(fn: () => void): void {
    if (this.handle === null) {
      this.socket.once('drain', fn)
      return
    }
    this.waiter = fn
    if (!this.holding) this.drained()
  }

  /** Sends what is held, then half-closes once everything written has gone. */
  end(): void {
    this.release()
    this.socket.end()
  }

  /** The socket as Writable: only ever a net.Socket (a RawSocket has none: directNow holds for it from the first write). */
  private get viaWritable(): Socket {
    return this.socket as Socket
  }

  private directNow(): boolean {
    if (this.handle !== null) return true
    const s = this.socket
    // A bare connection has nothing but its handle (destroyed or not: then nothing is sent).
    if (s instanceof RawSocket) {
      this.handle = s._handle
      return true
    }
    // Writable's bytes (written while connecting, or through it before) go first, all of them.
    if (s.connecting || s.destroyed || s.writableLength > 0 || s.writableCorked > 0) return false
    // A TLS socket has none (its handle takes ciphertext): it is always written through Writable.
    const handle = nativeStream(s)
    if (handle === null) return false
    this.handle = handle
    return true
  }

  private flush(): void {
    const held = this.held
    // A destroyed socket's handle is closed: what was held goes nowhere, as Writable would drop it.
    if (held.length === 2) this.send(held[0]!)
    else if (!this.socket.destroyed) {
      const req = this.request()
      this.afterWrite(req, this.handle!.writev(req, held, false), held)
    }
    this.held = []
    this.heldBytes = 0
    this.drained()
  }

  private send(data: string | Buffer): void {
    if (this.socket.destroyed) return
    const req = this.request()
    this.afterWrite(
      req,
      typeof data === 'string' ? this.handle!.writeLatin1String(req, data) : this.handle!.writeBuffer(req, data),
      data,
    )
  }

  private request(): WriteReq {
    if (this.req !== null) return this.req
    const req = new WriteWrap()
    req.oncomplete = this.completed
    req.data = null
    return (this.req = req)
  }

  private afterWrite(req: WriteReq, err: number, data: WriteReq['data']): void {
    if (err !== 0) return this.fail(err)
    // Not all taken at once: libuv keeps the request (and the request the bytes) until it is.
    if (lastWriteWasAsync()) {
      req.data = data
      this.req = null
    }
  }

  private readonly completed = (status: number): void => {
    if (status < 0) this.fail(status)
    else this.drained()
  }

  private drained(): void {
    if (this.waiter === null || this.handle!.writeQueueSize > 0) return
    const fn = this.waiter
    this.waiter = null
    fn()
  }

  private fail(status: number): void {
    if (this.socket.destroyed) return
    const code = getSystemErrorName(status)
    this.socket.destroy(Object.assign(new Error(`write ${code}`), { code, errno: status, syscall: 'write' }))
  }
}
