// The proxies of one thread, the main one or a worker, on sockets the main thread made: an
// HTTP proxy on its socket of the HTTP group, a DNS proxy on its UDP socket of the DNS group (the
// main thread's also takes DNS over TCP). One piece of code for every thread, so the threads
// differ only in the sockets they are given and in how what DNS answers teach is learned.

import type { Logger } from 'pino'
import type { PolicyEngine } from '../../policy/engine.js'
import { proxymapLookup } from '../../redirect-bpf/map-layout.js'
import { DnsProxy, type DnsProxyOptions } from '../dns/dns-proxy.js'
import { HttpProxy, type HttpProxyOptions } from '../http/http-proxy.js'
import { type OverloadInput, threadOverload } from '../overload/thread-overload.js'

/** A thread's share of the DNS proxy (data: it crosses to worker threads). */
export interface DnsLaneInput {
  /** This thread's UDP socket of the DNS proxy's group. */
  fd: number
  /** Where steered datagrams were going (map-layout.ts originalDestination). */
  proxymapFd: number
  answerFrom: 'listener' | 'server'
  rejectCode: 'REFUSED' | 'NXDOMAIN'
  /** How long an answer waits for the main thread to write what it taught. */
  maxDelayMs: number
  /** This thread's share of a source's DNS query rate. */
  rate: { perSecond: number; burst: number }
}

export interface ThreadProxiesOptions {
  engine: PolicyEngine
  logger: Logger
  /** The local CA for TLS interception (null: none). */
  caDir: string | null
  /** The node's budgets and pressure settings. */
  overload: OverloadInput
  /** This thread's HTTP listener, and how the main thread in dnat mode finds a flow. */
  http: { fd: number; flowOf?: HttpProxyOptions['flowOf'] } | null
  /** This thread's DNS lane; the main thread's with its TCP listener. */
  dns: (DnsLaneInput & { tcpFd?: number; tcpOriginalDestination?: DnsProxyOptions['tcpOriginalDestination'] }) | null
  /** What an allowed answer teaches, before it is released (learn-relay.ts). */
  learn: NonNullable<DnsProxyOptions['learn']>
}

export interface ThreadProxies {
  http: HttpProxy | null
  dns: DnsProxy | null
  /** Another agent has taken over the sockets: finish what is in flight here (at most `timeoutMs`), then close. */
  drain(timeoutMs: number): Promise<void>
  close(): Promise<void>
}

export async function startThreadProxies(o: ThreadProxiesOptions): Promise<ThreadProxies> {
  const { engine, logger } = o
  const ca = o.caDir ? { caDir: o.caDir } : {}
  const overload = threadOverload(o.overload, logger)
  const http = o.http
    ? new HttpProxy({ engine, logger, overload, ...ca, ...(o.http.flowOf ? { flowOf: o.http.flowOf } : {}) })
    : null
  if (http) await http.listen({ fd: o.http!.fd })
  const lane = o.dns
  const dns = lane
    ? new DnsProxy({
        engine,
        logger,
        originalDestination: (address, port, out) => proxymapLookup(lane.proxymapFd, address, port, 'udp', out),
        ...(lane.tcpOriginalDestination ? { tcpOriginalDestination: lane.tcpOriginalDestination } : {}),
        rejectCode: lane.rejectCode,
        answerFrom: lane.answerFrom,
        learn: o.learn,
        rate: lane.rate,
        overload,
      })
    : null
  if (dns) await dns.listen(lane!.tcpFd === undefined ? { fd: lane!.fd } : { fd: lane!.fd, tcpFd: lane!.tcpFd })
  return {
    http,
    dns,
    drain: async (timeoutMs) => void (await Promise.all([dns?.drain(timeoutMs), http?.drain(timeoutMs)])),
    close: async () => {
      dns?.close()
      await http?.close()
    },
  }
}
