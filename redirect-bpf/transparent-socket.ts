// Listening sockets the kernel may deliver other destinations' connections to (IP_TRANSPARENT),
// made with libc through koffi and handed to Node by fd: `net.createServer().listen({ fd })`.
// Accepted sockets' localAddress/localPort are then the original destination. Also a plain
// listener, made where its namespace is and handed to a process that runs in another.

import koffi from 'koffi'
import { libc } from '../lib/libc.js'
import { parseIPv4 } from '../policy/cidr.js'
import { BpfError, errnoName } from './libbpf.js'

const AF_INET = 2
const SOCK_STREAM = 1
const SOCK_NONBLOCK = 0o4000
const SOCK_CLOEXEC = 0o2000000
const SOL_SOCKET = 1
const SO_REUSEADDR = 2
const SO_REUSEPORT = 15
const SOL_IP = 0
const IP_TRANSPARENT = 19

function fail(what: string, fd: number): never {
  const errno = koffi.errno()
  if (fd >= 0) libc().close(fd)
  throw new BpfError(
    errno === 1 ? 'EPERM' : 'EATTACH',
    `${what}: ${errnoName(errno)}${errno === 1 ? ' (IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW)' : ''}`,
    { errno },
  )
}

const SOCK_DGRAM = 2

/** A socket of `type` with SO_REUSEADDR and IP_TRANSPARENT (unless not `transparent`; and SO_REUSEPORT), bound to address:port. */
function boundSocket(
  type: number,
  address: string,
  port: number,
  o: { reusePort?: boolean; transparent?: boolean } = {},
): number {
  const lib = libc()
  const addr = parseIPv4(address)
  if (addr === null) throw new BpfError('EATTACH', `'${address}' is not an IPv4 address`)
  const fd = lib.socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number
  if (fd < 0) fail('socket', fd)
  const one = Buffer.alloc(4)
  one.writeInt32LE(1)
  if ((lib.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4) as number) !== 0) fail('SO_REUSEADDR', fd)
  if (o.reusePort && (lib.setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, one, 4) as number) !== 0) fail('SO_REUSEPORT', fd)
  if (o.transparent !== false && (lib.setsockopt(fd, SOL_IP, IP_TRANSPARENT, one, 4) as number) !== 0)
    fail('IP_TRANSPARENT', fd)
  const sa = Buffer.alloc(16)
  sa.writeUInt16LE(AF_INET, 0)
  sa.writeUInt16BE(port, 2)
  sa.writeUInt32BE(addr, 4)
  if ((lib.bind(fd, sa, 16) as number) !== 0) fail(`bind ${address}:${port}`, fd)
  return fd
}

/**
 * A listening TCP socket with IP_TRANSPARENT: `net.createServer().listen({ fd })`. With
 * `reusePort`, several such sockets (one per proxy thread) form one group and the kernel spreads
 * new connections over them by their addresses; the socket lookup that steering does (TPROXY,
 * sk_assign) selects within the group too.
 */
export function transparentTcpListener(
  address: string,
  port: number,
  opts: { backlog?: number; reusePort?: boolean } = {},
): number {
  return listening(boundSocket(SOCK_STREAM, address, port, { reusePort: opts.reusePort }), opts.backlog ?? 1024)
}

/** A plain listening TCP socket (no IP_TRANSPARENT), in this thread's namespace. */
export function tcpListener(address: string, port: number): number {
  return listening(boundSocket(SOCK_STREAM, address, port, { transparent: false }), 128)
}

function listening(fd: number, backlog: number): number {
  if ((libc().listen(fd, backlog) as number) !== 0) fail('listen', fd)
  return fd
}

/**
 * A UDP socket with IP_TRANSPARENT: the proxy's receiving socket, or a reply socket bound to an
 * original destination (a non-local address) so answers come from where the client sent to.
 * With `reusePort`, receiving sockets (one per DNS proxy thread) form a group the kernel spreads
 * clients over, by their addresses.
 */
export function transparentUdpSocket(address: string, port: number, opts: { reusePort?: boolean } = {}): number {
  return boundSocket(SOCK_DGRAM, address, port, { reusePort: opts.reusePort })
}

/** A plain UDP socket in this thread's namespace (port 0: any free one). */
export function udpSocket(address: string, port: number): number {
  return boundSocket(SOCK_DGRAM, address, port, { transparent: false })
}

/** The port a socket is bound to. */
export function localPort(fd: number): number {
  const sa = Buffer.alloc(16)
  const len = new Uint32Array([16])
  if ((libc().getsockname(fd, sa, len) as number) !== 0) fail('getsockname', -1)
  return sa.readUInt16BE(2)
}
