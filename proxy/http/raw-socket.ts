// An accepted plain TCP connection driven on its libuv handle, without a net.Socket: the HTTP/1.1
// proxy reads it (http1-parser.ts) and writes it (socket-writer.ts) through the handle anyway,
// and a net.Socket per connection (its stream states, the nextTicks of its end, its timer) was
// a third of a short connection's CPU. It offers the few members of net.Socket the proxy uses.
// Its end follows net's: the peer's EOF ends this side too, after what was queued (or, with
// allowHalfOpen, is told as 'end' and this side goes on until end()), and the handle is closed
// once both sides are done; 'close' follows. A connection that turns out to be TLS or HTTP/2
// becomes a net.Socket after all (toNetSocket) for the code that speaks those.

import { EventEmitter } from 'node:events'
import { Socket, type SocketConstructorOpts } from 'node:net'
import { performance } from 'node:perf_hooks'
import { type HandleAddress, readAsNetDoes, readResult, ShutdownWrap, type TcpHandle } from './native-stream.js'

const noop = (): void => undefined

/** For getpeername/getsockname to fill in: with node's keys already in its order, its writes change no object shape (~150 ns a call). */
const filledIn = (): HandleAddress => ({ address: undefined, family: undefined, port: undefined })

export class RawSocket extends EventEmitter {
  readonly _handle: TcpHandle
  /** When it was made (performance.now()): the proxy ends one that says nothing for too long. */
  readonly acceptedAt = performance.now()
  openSlot = -1
  destroyed = false
  /** As net.Socket's: the peer's EOF is told ('end') and this side stays open until end(). */
  allowHalfOpen = false
  /** The write side is being (or has been) shut down. */
  private ending = false
  private shutDown = false
  private readEnded = false
  private timer: NodeJS.Timeout | null = null
  private peer: HandleAddress | null = null
  private local: HandleAddress | null = null

  /**
   * Reads from the start, as net.Socket does: whoever takes the bytes wraps the handle's onread
   * before the event loop runs again (bytes read with no one there are dropped).
   */
  constructor(handle: TcpHandle) {
    super()
    this._handle = handle
    handle.onread = this.onEndOrError
    handle.reading = true
    if (handle.readStart() !== 0) this.destroy()
  }

  /**
   * Node calls this for every read; whoever reads the bytes wraps it and passes on what is not
   * data (as they do with net's own reader). The peer's EOF ends this side too; a read error
   * ends the connection.
   */
  private readonly onEndOrError = (): void => {
    const n = readResult()
    if (n >= 0) return
    this.readEnded = true
    this._handle.reading = false
    this._handle.readStop()
    if (n !== UV_EOF || this.shutDown) this.destroy()
    else if (this.allowHalfOpen) this.emit('end')
    else this.end()
  }

  get remoteAddress(): string | undefined {
    return this.peerAddress().address
  }

  get remotePort(): number | undefined {
    return this.peerAddress().port
  }

  get localAddress(): string | undefined {
    return this.localAddressInfo().address
  }

  get localPort(): number | undefined {
    return this.localAddressInfo().port
  }

  private peerAddress(): HandleAddress {
    if (this.peer === null) {
      this.peer = filledIn()
      if (!this.destroyed) this._handle.getpeername(this.peer)
    }
    return this.peer
  }

  private localAddressInfo(): HandleAddress {
    if (this.local === null) {
      this.local = filledIn()
      if (!this.destroyed) this._handle.getsockname(this.local)
    }
    return this.local
  }

  /** Shuts the write side down once what is queued has gone; the connection closes when the peer has ended too. */
  end(): void {
    if (this.ending || this.destroyed) return
    this.ending = true
    const req = new ShutdownWrap()
    req.oncomplete = (status) => {
      this.shutDown = true
      if (status < 0 || this.readEnded) this.destroy()
    }
    if (this._handle.shutdown(req) !== 0) this.destroy()
  }

  /** Closes the connection now (queued writes are dropped); 'close' follows. The error, if any, is not kept. */
  destroy(_error?: Error): void {
    if (this.destroyed) return
    this.destroyed = true
    this.setTimeout(0)
    const h = this._handle
    h.onread = noop
    h.close(() => this.emit('close'))
  }

  /** Closes the connection with a reset: the peer learns at once that it was refused. 'close' follows. */
  reset(): void {
    if (this.destroyed) return
    this.destroyed = true
    this.setTimeout(0)
    const h = this._handle
    h.onread = noop
    if (h.reset(() => this.emit('close')) !== 0) h.close(() => this.emit('close'))
  }

  /** Calls `onTimeout` after `ms` (0: no longer): a deadline, not net's inactivity timeout. */
  setTimeout(ms: number, onTimeout?: () => void): this {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = ms > 0 && onTimeout !== undefined ? setTimeout(onTimeout, ms).unref() : null
    return this
  }

  /** A net.Socket on this connection's handle, `first` (bytes already read) to be read again first. */
  toNetSocket(first: Buffer): Socket {
    const h = this._handle
    // net.Socket starts reading the handle itself; this one is done with it.
    h.reading = false
    h.readStop()
    this.destroyed = true
    this.setTimeout(0)
    // net.Socket takes a handle, as net.Server makes the sockets it accepts (not in its types).
    const socket = new Socket({ handle: h, readable: true, writable: true } as unknown as SocketConstructorOpts)
    readAsNetDoes(h)
    socket.unshift(first)
    return socket
  }
}

/** libuv's end of file. */
const UV_EOF = -4095
