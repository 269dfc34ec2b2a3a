// How the proxy reads a socket. A plain TCP socket's handle reads straight into this thread's read
// buffer, and the reader (the HTTP/1.1 parser, the HTTP/2 framer) takes each read in place before
// the next one: no Buffer per read. A TLS socket, or any socket without the fast path's
// internals (native-stream.ts), is read through its 'data' events. net's own reader still sees
// the end of the stream and read errors, so 'end' and 'close' come as usual.

import type { Socket } from 'node:net'
import { INPUT_BYTES } from './llhttp-wasm.js'
import { type NativeStream, nativeStream, readInto, readResult } from './native-stream.js'
import type { RawSocket } from './raw-socket.js'

/** Where libuv reads plain sockets on this thread: each read is handled before the next. */
let readBuffer: Buffer | null = null

export function threadReadBuffer(): Buffer {
  return (readBuffer ??= Buffer.allocUnsafeSlow(INPUT_BYTES))
}

export class SocketReads {
  private socket: Socket | RawSocket | null = null
  /** The socket's native handle while it is read through it. */
  private handle: NativeStream | null = null

  /** `onBytes` gets each read: `data[0, length)`, valid only during the call. */
  constructor(private readonly onBytes: (data: Buffer, length: number) => void) {}

  start(socket: Socket | RawSocket): void {
    this.socket = socket
    const handle = nativeStream(socket)
    if (handle === null) return void socket.on('data', this.onData)
    this.handle = handle
    const netRead = handle.onread
    const buf = threadReadBuffer()
    readInto(handle, buf)
    handle.onread = (ab) => {
      const n = readResult()
      if (n > 0) this.onBytes(buf, n)
      else if (n < 0) return netRead.call(handle, ab)
      return undefined
    }
  }

  /** Stops reading (back-pressure: the other side cannot take more now). */
  pause(): void {
    const h = this.handle
    if (h === null) return void (this.socket as Socket | null)?.pause()
    if (!h.reading || this.socket!.destroyed) return
    h.reading = false
    h.readStop()
  }

  resume(): void {
    const h = this.handle
    if (h === null) return void (this.socket as Socket | null)?.resume()
    if (h.reading || this.socket!.destroyed) return
    h.reading = true
    h.readStart()
  }

  /** No more reads reach onBytes through 'data' (a handle's reads stop with the socket). */
  stop(): void {
    this.socket?.off('data', this.onData)
  }

  private readonly onData = (data: Buffer): void => {
    this.onBytes(data, data.length)
  }
}
