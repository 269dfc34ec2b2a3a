// A plain TCP socket's native handle (libuv's stream, as node's stream_wrap binding exposes it)
// and how node:net itself reads and writes it (lib/internal/stream_base_commons.js): the HTTP/1.1
// proxy drives sockets this way, without net.Socket's Readable and Writable per read and write.
// Node internals: this file is the only place that knows them (http1-parser.ts reads through
// it, socket-writer.ts writes, raw-socket.ts accepts, shuts down and closes). They are probed
// once, as this module loads (`fastPath`): where a Node release changed them, or where
// process.binding is refused (`--permission`), or where L7PROXY_FAST_PATH=off asks it, the
// proxy runs on plain net.Sockets instead (nativeStream() is then always null).

import type { Server, Socket } from 'node:net'
import { TLSSocket } from 'node:tls'
import type { RawSocket } from './raw-socket.js'

/** A write request: node's WriteWrap. */
export interface WriteReq {
  /** Called by libuv's write callback for a write that did not complete at once (status < 0: failed). */
  oncomplete: (status: number) => void
  /** What a write still in libuv's queue holds, kept alive with it. */
  data: string | Buffer | Array<string | Buffer> | null
}

export interface NativeStream {
  /** net's own flag for whether it is reading; kept in step by whoever starts and stops reads. */
  reading: boolean
  readStart(): number
  readStop(): number
  /** Reads go into `buf` (one the caller keeps), and onread gets only their length: use readInto. */
  useUserBuffer(buf: Uint8Array): void
  /** The buffer readInto gave it. */
  userBuffer?: Buffer
  /** Called after every read: its length (or a negative error, or EOF) in readResult(). */
  onread: (this: NativeStream, ab: ArrayBuffer | undefined) => unknown
  /** Bytes written and not yet taken by the kernel. */
  readonly writeQueueSize: number
  writeLatin1String(req: WriteReq, s: string): number
  writeBuffer(req: WriteReq, b: Buffer): number
  /** `chunks`: [data, encoding, data, encoding...], or only Buffers when `allBuffers`. */
  writev(req: WriteReq, chunks: Array<string | Buffer>, allBuffers: boolean): number
}

/** A shutdown request: node's ShutdownWrap. */
export interface ShutdownReq {
  /** Called once the write side is shut down (after every queued write); status < 0: failed. */
  oncomplete: (status: number) => void
}

/** An address as getsockname/getpeername fill it in. */
export interface HandleAddress {
  address?: string
  family?: string
  port?: number
}

/** A TCP connection's handle (node's tcp_wrap TCP), as net.Server hands accepted ones to onconnection. */
export interface TcpHandle extends NativeStream {
  getsockname(out: HandleAddress): number
  getpeername(out: HandleAddress): number
  /** 0, or an error; oncomplete follows either way unless it failed at once. */
  shutdown(req: ShutdownReq): number
  close(cb: () => void): void
  /** Closes with a reset (SO_LINGER 0: RST, not FIN); 0, or an error when it could not. */
  reset(cb: () => void): number
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteReq
  ShutdownWrap: new () => ShutdownReq
  streamBaseState: Int32Array
  kReadBytesOrError: number
  kArrayBufferOffset: number
  kLastWriteWasAsync: number
}

type Binding = (name: string) => Record<string, unknown>

/** What of a TCP handle the fast path calls (and net.Server's onconnection, which it replaces). */
const TCP_METHODS = [
  'readStart',
  'readStop',
  'useUserBuffer',
  'writeBuffer',
  'writev',
  'writeLatin1String',
  'shutdown',
  'getsockname',
  'getpeername',
  'reset',
  'close',
] as const
const STREAM_WRAP_KEYS = [
  'WriteWrap',
  'ShutdownWrap',
  'streamBaseState',
  'kReadBytesOrError',
  'kArrayBufferOffset',
  'kLastWriteWasAsync',
] as const

/** The stream_wrap binding if every internal the fast path uses is there; otherwise what is missing. */
function probe(): StreamWrapBinding | string {
  if (process.env.L7PROXY_FAST_PATH === 'off') return 'nothing (L7PROXY_FAST_PATH=off)'
  const binding = (process as unknown as { binding?: Binding }).binding
  if (typeof binding !== 'function') return 'process.binding'
  let streamWrap: Record<string, unknown>
  let tcp: { prototype: Record<string, unknown> } | undefined
  try {
    streamWrap = binding('stream_wrap')
    tcp = binding('tcp_wrap').TCP as typeof tcp
  } catch (e) {
    return `process.binding (${(e as Error).message})`
  }
  for (const k of STREAM_WRAP_KEYS) if (streamWrap[k] === undefined) return `stream_wrap.${k}`
  for (const m of TCP_METHODS) if (typeof tcp?.prototype[m] !== 'function') return `tcp_wrap.TCP.prototype.${m}`
  return streamWrap as unknown as StreamWrapBinding
}

const probed = probe()
const binding: StreamWrapBinding | null = typeof probed === 'string' ? null : probed

/** Whether the fast path's internals are there; if not, the first one found missing. */
export const fastPath: { available: true } | { available: false; missing: string } =
  binding !== null ? { available: true } : { available: false, missing: probed as string }

// Set when the fast path is available (only then are they used).
const { streamBaseState, kReadBytesOrError, kArrayBufferOffset, kLastWriteWasAsync } = binding ?? {
  streamBaseState: new Int32Array(0),
  kReadBytesOrError: 0,
  kArrayBufferOffset: 0,
  kLastWriteWasAsync: 0,
}
export const WriteWrap = binding?.WriteWrap as StreamWrapBinding['WriteWrap']
export const ShutdownWrap = binding?.ShutdownWrap as StreamWrapBinding['ShutdownWrap']

/** The native handle of a plain TCP socket (null for a TLS socket, whose handle takes ciphertext, or one with none yet; always null without the fast path). */
export function nativeStream(socket: Socket | RawSocket): NativeStream | null {
  if (binding === null || socket instanceof TLSSocket) return null
  const handle = (socket as unknown as { _handle: (NativeStream & { isStreamBase?: boolean }) | null })._handle
  return handle?.isStreamBase === true && typeof handle.useUserBuffer === 'function' ? handle : null
}

/**
 * A listening server's accepted connections go to `accept` as bare handles (no net.Socket is
 * made for them), with TCP_NODELAY, which they take from the listening socket (Linux copies it
 * to accepted ones: no setsockopt per connection); to be called once it listens, before the loop
 * runs again. A failed accept (EMFILE, say) is passed over: libuv tries again on the next readiness.
 * False (and nothing changed) when the server's handle is not what this expects.
 */
export function acceptHandles(server: Server, accept: (handle: TcpHandle) => void): boolean {
  type Listening = {
    onconnection: (err: number, handle: TcpHandle | undefined) => void
    setNoDelay(on: boolean): number
  }
  const listening = (server as unknown as { _handle: Listening | null })._handle
  if (listening === null || typeof listening.onconnection !== 'function' || typeof listening.setNoDelay !== 'function')
    return false
  listening.setNoDelay(true)
  listening.onconnection = (err, handle) => {
    if (err === 0 && handle !== undefined) accept(handle)
  }
  return true
}

/** Has libuv read `handle` into `buf` from now on (node stacks one more reader per call: once per buffer). */
export function readInto(handle: NativeStream, buf: Buffer): void {
  if (handle.userBuffer === buf) return
  handle.useUserBuffer(buf)
  handle.userBuffer = buf
}

/**
 * For a handle read into a buffer of ours that has become a net.Socket's: net's reader takes
 * each read as an ArrayBuffer of its own (node's default), so each is copied into one.
 */
export function readAsNetDoes(handle: NativeStream): void {
  const buf = handle.userBuffer
  if (buf === undefined) return
  const netRead = handle.onread
  handle.onread = (ab) => {
    const n = readResult()
    if (n <= 0) return netRead.call(handle, ab)
    const copy = new ArrayBuffer(n)
    new Uint8Array(copy).set(buf.subarray(0, n))
    streamBaseState[kArrayBufferOffset] = 0
    return netRead.call(handle, copy)
  }
}

/** In onread: the bytes read, 0, or a negative libuv error (EOF among them). */
export function readResult(): number {
  return streamBaseState[kReadBytesOrError]!
}

/** Right after a write call: whether libuv queued part of it (its request then completes later). */
export function lastWriteWasAsync(): boolean {
  return streamBaseState[kLastWriteWasAsync] !== 0
}
