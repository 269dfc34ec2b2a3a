// Batched UDP I/O on raw sockets through libc (koffi), for the DNS proxy's hot path. Node's dgram
// costs a JS callback, a Buffer, an address object and a deferred send per datagram, more than
// the proxy's own work on it; here recvmmsg drains up to BATCH datagrams a call from each socket,
// each handed over as a view into a buffer reused by the next call, and the sends that handling
// them queued leave in one sendmmsg per socket. Readiness comes from poll() run on libuv's
// threadpool (koffi's async call), so the event loop never blocks waiting; once woken, the pump
// reads until the sockets are empty (bounded), and reads again each turn of the event loop while
// that finds datagrams: only a turn that finds none waits in poll() again.

import koffi from 'koffi'
import { libbpf } from '../../redirect-bpf/libbpf.js'

const BATCH = 64
/** A datagram buffer: the largest UDP payload, so nothing is ever cut short. */
const SLOT = 65536
const MSGHDR = 64 // struct mmsghdr on x86-64: msghdr (56) + msg_len + padding
const IOVEC = 16
const SOCKADDR = 16
const POLLFD = 8
const POLLIN = 1
const MSG_DONTWAIT = 0x40
const EAGAIN = 11
/** Read rounds over all sockets per wakeup, so a flood cannot hold the event loop for long. */
const MAX_ROUNDS = 16
/** poll() returns this often when idle, so close() never waits on a blocked thread for long. */
const POLL_MS = 200

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
   * Counts the reads (recvmmsg calls) that returned datagrams: the datagrams of one read were all
   * queued before it, so what the handler looks up about a sender (its original destination)
   * holds for the rest of that read.
   */
  batch = 0
  private readonly rx = new Ring()
  private readonly tx = new Ring()
  private readonly txSocket = new Int32Array(BATCH)
  private queued = 0
  private readonly pollPtr: unknown
  private readonly pollAt: number
  private readonly pollMem: Buffer
  private closed = false
  /** A poll() is out on the threadpool (it reads pollfds until it returns), or a drain is due. */
  private waiting = false
  private draining = false
  private freed = false

  /** Reads the sockets `receive` with `onDatagram`; `send` may go to any socket. */
  constructor(
    private readonly receive: readonly number[],
    private readonly onDatagram: DatagramHandler,
    private readonly onError: (e: Error) => void,
  ) {
    libbpf()
    this.pollPtr = koffi.alloc('uint8_t', POLLFD * receive.length)
    this.pollAt = Number(koffi.address(this.pollPtr))
    this.pollMem = Buffer.from(koffi.view(this.pollPtr, POLLFD * receive.length))
    receive.forEach((fd, i) => {
      this.pollMem.writeInt32LE(fd, i * POLLFD)
      this.pollMem.writeInt16LE(POLLIN, i * POLLFD + 4)
    })
  }

  start(): void {
    this.drain()
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
    if (this.queued === 1 && !this.draining) setImmediate(() => this.flush()) // a send from outside a batch
    return true
  }

  /** Sends what is queued: one sendmmsg per run of datagrams from the same socket. */
  flush(): void {
    const { sendmmsg } = libbpf()
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

  close(): void {
    if (this.closed) return
    this.closed = true
    this.flush()
    // A poll out on the threadpool, or a drain under way or due, still uses the memory: freed when it ends.
    if (!this.waiting && !this.draining) this.freeMemory()
  }

  private freeMemory(): void {
    if (this.freed) return
    this.freed = true
    this.rx.free()
    this.tx.free()
    koffi.free(this.pollPtr)
  }

  /** Reads until every socket is empty (or MAX_ROUNDS), then waits for more. */
  private drain(): void {
    const { recvmmsg } = libbpf()
    this.draining = true
    let total = 0
    for (let round = 0; round < MAX_ROUNDS; round++) {
      let got = 0
      for (const fd of this.receive) {
        const n = recvmmsg(fd, this.rx.header(0), BATCH, MSG_DONTWAIT, 0) as number
        if (n < 0) {
          if (koffi.errno() !== EAGAIN) this.stats.dropped++ // an ICMP error reported on the socket: read on
          continue
        }
        got += n
        this.stats.received += n
        this.batch++
        for (let i = 0; i < n; i++) {
          this.rx.reset(i)
          try {
            this.onDatagram(fd, this.rx.slots[i]!.subarray(0, this.rx.received(i)), this.rx.address(i), this.rx.port(i))
          } catch (e) {
            this.onError(e as Error)
          }
        }
      }
      this.flush()
      total += got
      if (got === 0) break
    }
    this.draining = false
    // While datagrams keep coming, read again after the event loop's other work (no poll); only
    // a turn that found none waits in poll().
    if (this.closed) return this.freeMemory()
    this.waiting = true
    if (total > 0) setImmediate(() => this.woken())
    else libbpf().poll.async(this.pollAt, this.receive.length, POLL_MS, () => this.woken())
  }

  private woken(): void {
    this.waiting = false
    if (this.closed) this.freeMemory()
    else this.drain()
  }
}
