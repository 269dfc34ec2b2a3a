// Batched UDP I/O on raw sockets through libc (koffi), for the DNS proxy's hot path. Node's dgram
// costs a JS callback, a Buffer, an address object and a deferred send per datagram, more than
// the proxy's own work on it; here recvmmsg drains up to BATCH datagrams a call, each handed over
// as a view into a buffer reused by the next call, and the sends that handling them queued leave
// in one sendmmsg per socket. Readiness comes from libuv's own epoll: a dgram socket on a copy of
// each fd, whose read of the first datagram of a wakeup starts the drain (so a wakeup costs no
// thread, unlike a poll() on the threadpool: that cost more than the queries themselves when
// they came a few at a time).

import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import koffi from 'koffi'
import { libc } from '../../lib/libc.js'
import { parseIPv4 } from '../../policy/cidr.js'

const BATCH = 64
/** A datagram buffer: the largest UDP payload, so nothing is ever cut short. */
const SLOT = 65536
const MSGHDR = 64 // struct mmsghdr on x86-64: msghdr (56) + msg_len + padding
const IOVEC = 16
const SOCKADDR = 16
const MSG_DONTWAIT = 0x40
const EAGAIN = 11
const F_DUPFD_CLOEXEC = 1030
/**
 * recvmmsg calls per wakeup of a socket: libuv reads again (a bounded number of times) while
 * the socket has datagrams, so a flood cannot hold the event loop for long.
 */
const MAX_ROUNDS = 2

/** Called for each datagram read: `data` is valid only until the handler returns. */
export type DatagramHandler = (socket: number, data: Buffer, address: number, port: number) => void

/** Native memory for BATCH datagrams: headers, iovecs, addresses and buffers, laid out once. */
class Ring {
  readonly base: number
  readonly mem: Buffer
  private readonly ptr: unknown
  readonly slots: Buffer[] = []
  private readonly hdrAt = 0
  private readonly addrAt = BATCH * (MSGHDR + IOVEC)
  private readonly slotAt = BATCH * (MSGHDR + IOVEC + SOCKADDR)

  constructor() {
    const size = BATCH * (MSGHDR + IOVEC + SOCKADDR + SLOT)
    this.ptr = koffi.alloc('uint8_t', size)
    this.base = Number(koffi.address(this.ptr))
    this.mem = Buffer.from(koffi.view(this.ptr, size))
    this.mem.fill(0, 0, this.slotAt)
    for (let i = 0; i < BATCH; i++) {
      const hdr = this.hdrAt + i * MSGHDR
      const iov = BATCH * MSGHDR + i * IOVEC
      this.mem.writeBigUInt64LE(BigInt(this.base + this.addrAt + i * SOCKADDR), hdr) // msg_name
      this.mem.writeUInt32LE(SOCKADDR, hdr + 8) // msg_namelen
      this.mem.writeBigUInt64LE(BigInt(this.base + iov), hdr + 16) // msg_iov
      this.mem.writeBigUInt64LE(1n, hdr + 24) // msg_iovlen
      this.mem.writeBigUInt64LE(BigInt(this.base + this.slotAt + i * SLOT), iov) // iov_base
      this.mem.writeBigUInt64LE(BigInt(SLOT), iov + 8) // iov_len
      this.mem.writeUInt16LE(2, this.addrAt + i * SOCKADDR) // AF_INET
      this.slots.push(this.mem.subarray(this.slotAt + i * SLOT, this.slotAt + (i + 1) * SLOT))
    }
  }

  header(i: number): number {
    return this.base + this.hdrAt + i * MSGHDR
  }

  /** The length of datagram i (recvmmsg's msg_len; a slot holds the largest there is). */
  received(i: number): number {
    return this.mem.readUInt32LE(this.hdrAt + i * MSGHDR + 56)
  }

  /** Makes header i ready for another receive (the kernel rewrote the address length). */
  reset(i: number): void {
    this.mem.writeUInt32LE(SOCKADDR, this.hdrAt + i * MSGHDR + 8)
  }

  address(i: number): number {
    return this.mem.readUInt32BE(this.addrAt + i * SOCKADDR + 4)
  }

  port(i: number): number {
    return this.mem.readUInt16BE(this.addrAt + i * SOCKADDR + 2)
  }

  /** Sets datagram i to go to address:port with the first `length` bytes of its slot. */
  setSend(i: number, address: number, port: number, length: number): void {
    this.mem.writeUInt16BE(port, this.addrAt + i * SOCKADDR + 2)
    this.mem.writeUInt32BE(address, this.addrAt + i * SOCKADDR + 4)
    this.mem.writeUInt32LE(length, BATCH * MSGHDR + i * IOVEC + 8)
  }

  free(): void {
    koffi.free(this.ptr)
  }
}

export interface PumpStats {
  received: number
  sent: number
  /** Datagrams not sent (the socket refused them) or dropped as too large. */
  dropped: number
}

export class DatagramPump {
  readonly stats: PumpStats = { received: 0, sent: 0, dropped: 0 }
  /**
   * Counts the reads that returned datagrams: the datagrams of one read were all queued before
   * it, so what the handler looks up about a sender (its original destination) holds for the
   * rest of that read.
   */
  batch = 0
  private readonly rx = new Ring()
  private readonly tx = new Ring()
  private readonly txSocket = new Int32Array(BATCH)
  private queued = 0
  /** libuv's watch on each socket (a dgram socket on a copy of its fd, closed with it). */
  private readonly watchers: Socket[] = []
  /** Watchers closed by stopReading (closing one twice throws). */
  private readonly stoppedWatchers = new Set<Socket>()
  private closed = false
  /** Inside a wakeup: its sends leave together when it ends. */
  private draining = false
  private wokenAt = 0

  /** Reads the sockets `receive` with `onDatagram`; `send` may go to any socket. The fds stay the caller's. */
  constructor(
    private readonly receive: readonly number[],
    private readonly onDatagram: DatagramHandler,
    private readonly onError: (e: Error) => void,
  ) {
    libc()
  }

  /**
   * performance.now() as of the current wakeup's first read (one clock read for all the
   * datagrams read together: the time they were there); outside a wakeup, now.
   */
  get now(): number {
    return this.draining ? this.wokenAt : performance.now()
  }

  start(): void {
    const { fcntl } = libc()
    for (const fd of this.receive) {
      const copy = fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0) as number
      if (copy < 0) throw new Error(`datagram pump: cannot copy socket ${fd} (errno ${koffi.errno()})`)
      const watcher = createSocket('udp4')
      watcher.on('message', (first: Buffer, from: RemoteInfo) => this.woken(fd, first, from))
      watcher.on('error', (e) => this.onError(e))
      watcher.bind({ fd: copy })
      this.watchers.push(watcher)
    }
  }

  /**
   * Queues `length` bytes of `data` to go from `socket` to address:port; sent when the current
   * batch ends (or at once if the queue is full). Returns false (and counts a drop) if too large.
   */
  send(socket: number, data: Buffer, length: number, address: number, port: number): boolean {
    if (this.closed || length > SLOT) {
      this.stats.dropped++
      return false
    }
    if (this.queued === BATCH) this.flush()
    const i = this.queued++
    data.copy(this.tx.slots[i]!, 0, 0, length)
    this.tx.setSend(i, address, port, length)
    this.txSocket[i] = socket
    if (this.queued === 1 && !this.draining) setImmediate(() => this.flush()) // a send from outside a wakeup
    return true
  }

  /** Sends what is queued: one sendmmsg per run of datagrams from the same socket. */
  flush(): void {
    const { sendmmsg } = libc()
    let i = 0
    while (i < this.queued) {
      const fd = this.txSocket[i]!
      let j = i + 1
      while (j < this.queued && this.txSocket[j] === fd) j++
      while (i < j) {
        const n = sendmmsg(fd, this.tx.header(i), j - i, MSG_DONTWAIT) as number
        if (n > 0) {
          this.stats.sent += n
          i += n
        } else {
          // This datagram was refused (a full buffer, or an error a past ICMP left): UDP may lose it.
          this.stats.dropped++
          i++
        }
      }
    }
    this.queued = 0
  }

  /** Stops reading `fd` (another process reads it now); sending from it goes on. */
  stopReading(fd: number): void {
    const i = this.receive.indexOf(fd)
    const w = this.watchers[i]
    if (i < 0 || w === undefined || this.stoppedWatchers.has(w)) return
    this.stoppedWatchers.add(w)
    w.close()
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.flush()
    for (const w of this.watchers) if (!this.stoppedWatchers.has(w)) w.close()
    // The rings stay until no wakeup can use them: after the watchers' handles have closed.
    setImmediate(() => {
      this.rx.free()
      this.tx.free()
    })
  }

  /** libuv found `fd` readable and read its first datagram: that one, then the rest in batches. */
  private woken(fd: number, first: Buffer, from: RemoteInfo): void {
    if (this.closed) return
    this.draining = true
    this.wokenAt = performance.now()
    this.stats.received++
    this.batch++
    this.handle(fd, first, parseIPv4(from.address) ?? 0, from.port)
    const { recvmmsg } = libc()
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const n = recvmmsg(fd, this.rx.header(0), BATCH, MSG_DONTWAIT, 0) as number
      if (n < 0 && koffi.errno() !== EAGAIN) this.stats.dropped++ // an ICMP error reported on the socket: libuv's next read goes past it
      if (n <= 0) break
      this.stats.received += n
      this.batch++
      for (let i = 0; i < n; i++) {
        this.rx.reset(i)
        this.handle(fd, this.rx.slots[i]!.subarray(0, this.rx.received(i)), this.rx.address(i), this.rx.port(i))
      }
      if (n < BATCH) break
    }
    this.flush()
    this.draining = false
  }

  private handle(fd: number, data: Buffer, address: number, port: number): void {
    try {
      this.onDatagram(fd, data, address, port)
    } catch (e) {
      this.onError(e as Error)
    }
  }
}
