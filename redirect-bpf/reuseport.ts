// The sk_reuseport program (progs/reuseport.bpf.c) on the HTTP proxy's SO_REUSEPORT group: the
// group's listeners (one per proxy thread) take turns at new connections instead of the kernel's
// hash of addresses. Attached through any socket of the group, it stays with the group while one
// socket is open: an agent taking over the sockets attaches its own over it.

import koffi from 'koffi'
import { libc } from '../lib/libc.js'
import type { BpfMap } from './bpf-object.js'
import { BpfError, errnoName } from './libbpf.js'
import { u32 } from './map-layout.js'

const SOL_SOCKET = 1
const SO_ATTACH_REUSEPORT_EBPF = 52

/** The group's sockets in turn order, then how many there are (turns past the last are not taken). */
export function spreadOver(threads: BpfMap, spread: BpfMap, socketFds: readonly number[], progFd: number): void {
  if (socketFds.length === 0) return
  if (socketFds.length > threads.maxEntries)
    throw new BpfError(
      'EMAP',
      `${socketFds.length} HTTP proxy threads: the datapath spreads connections over ${threads.maxEntries} at most`,
    )
  const fd = Buffer.alloc(8)
  socketFds.forEach((socketFd, i) => {
    fd.writeBigUInt64LE(BigInt(socketFd))
    threads.update(u32(i), fd)
  })
  const state = Buffer.alloc(8)
  state.writeUInt32LE(socketFds.length, 0)
  spread.update(u32(0), state)
  const prog = Buffer.alloc(4)
  prog.writeInt32LE(progFd)
  if ((libc().setsockopt(socketFds[0]!, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, prog, 4) as number) !== 0) {
    throw new BpfError(
      'EATTACH',
      `attaching the reuseport program to the HTTP proxy's listeners: ${errnoName(koffi.errno())}`,
    )
  }
}
