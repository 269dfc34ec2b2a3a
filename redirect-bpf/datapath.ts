// The node's kernel datapath, whole: the BPF objects loaded with their maps pinned, the redirect
// mode's node state, the programs attached to host veths, and policy deltas written to the maps.
// The agent starts one; tests start one per lab. Everything runs in one network namespace (the
// node's), named or the current one.

import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { distPath } from '../lib/project-root.js'
import type { EngineDelta } from '../policy/engine.js'
import { RESERVED_IDENTITIES } from '../policy/identity.js'
import { BpfObject } from './bpf-object.js'
import { ensureBpffs } from './bpffs.js'
import {
  attachSkMsg,
  attachSockops,
  createCgroup,
  detachSkMsg,
  detachSockops,
  releaseCgroup2Root,
  removeCgroup,
} from './cgroup.js'
import { BpfError } from './libbpf.js'
import {
  type Counter,
  checkLayout,
  decodePolicyKey,
  decodePolicyValue,
  endpointValue,
  liveCtDestinations,
  originalDestination,
  type PolicyMapKey,
  readCounters,
  readSockmapStats,
  u32,
  writeConfig,
} from './map-layout.js'
import { DEFAULT_MAP_SIZES, type MapSizes, maxEntries, preparePinnedSizes } from './map-sizes.js'
import {
  ensureMode,
  type RedirectMode,
  type Run,
  setupMode,
  teardownModes,
  usesSkLookup,
} from './modes/redirect-mode.js'
import { inNetns } from './netns.js'
import { PolicyWriter, type WriteStats } from './policy-writer.js'
import { type ProgramStats, programStats } from './program-stats.js'
import { spreadOver } from './reuseport.js'
import { addProxySocket, attachSkLookup, detachSkLookup } from './sk-lookup.js'
import { attachTc, detachTc, ifindexOf, removeClsact } from './tc.js'

const EARLY_DEMUX = '/proc/sys/net/ipv4/tcp_early_demux'

/** Sets a sysctl file to `value`; what it held before, or null when it held that already. */
function setSysctl(file: string, value: string): string | null {
  const previous = readFileSync(file, 'utf8').trim()
  if (previous === value) return null
  writeFileSync(file, value)
  return previous
}

export interface DatapathOptions {
  mode: RedirectMode
  /** A bpffs directory for the pinned maps (mounted if it is not one yet). */
  pinRoot: string
  /** Where the proxies listen: 127.0.0.1, or for dnat a node address rewritten packets reach. */
  proxyAddress: string
  proxyPorts: readonly number[]
  /** The node's named network namespace (/run/netns/NAME); absent: the current one. */
  netns?: string
  /** sockmap: the cgroup (under cgroup2) whose processes' sockets sock_ops sees; made (and removed at stop) unless it exists. */
  cgroupName?: string
  /** Entries of the ipcache and the policy map (default: the C header's). */
  mapSizes?: MapSizes
  /**
   * Another agent's datapath runs on these pinned maps in the same mode, and this one takes over:
   * its node state is kept (what is missing is added), the programs replace its own where they
   * are attached, and what this one writes first is recorded so that pruneStale() removes what
   * only the other had. earlyDemux: the setting as it was before the first agent changed it.
   */
  takeover?: { earlyDemux: string | null }
}

/** One of the programs' objects, on the pinned maps, those sized by the options at their sizes. */
function object(name: string, opts: DatapathOptions): BpfObject {
  return BpfObject.load(
    distPath(`redirect-bpf/progs/${name}.bpf.o`),
    opts.pinRoot,
    maxEntries(opts.mapSizes ?? DEFAULT_MAP_SIZES),
  )
}

export class Datapath {
  /** The sockmap cgroup's directory, when the mode has one. */
  readonly cgroup: string | null
  /** The cgroup was made for this datapath (a lab's is the lab's to remove). */
  private readonly ownCgroup: boolean
  /** tcp_early_demux as it was before start, when start changed it. */
  private earlyDemux: string | null = null
  private readonly attached = new Map<string, number>()
  /** Interfaces whose clsact qdisc we created (and so remove at stop). */
  private readonly ownClsact = new Set<number>()
  private readonly byEndpoint = new Map<number, number>()
  private readonly writer: PolicyWriter
  private sockmap: { sockops: BpfObject; skMsg: BpfObject } | null = null
  private skLookup: { obj: BpfObject; link: number } | null = null
  private reuseport: BpfObject | null = null
  private stopped = false
  private released = false

  private constructor(
    readonly opts: DatapathOptions,
    private readonly fromEndpoint: BpfObject,
    private readonly toEndpoint: BpfObject,
  ) {
    this.writer = new PolicyWriter(fromEndpoint, (id) => this.byEndpoint.get(id))
    const cgroup = opts.mode === 'sockmap' ? createCgroup(opts.cgroupName ?? 'l7proxy') : null
    this.cgroup = cgroup?.dir ?? null
    this.ownCgroup = cgroup?.made ?? false
  }

  /** Runs work in the node's namespace. */
  private inNode<T>(fn: () => T): T {
    return this.opts.netns ? inNetns(this.opts.netns, fn) : fn()
  }

  /** Runs a command in the node's namespace. */
  readonly run: Run = (argv) => {
    const full = this.opts.netns ? ['ip', 'netns', 'exec', this.opts.netns, ...argv] : argv
    const r = spawnSync(full[0]!, full.slice(1), { encoding: 'utf8', timeout: 10_000 })
    return { code: r.status ?? 1, stderr: r.stderr ?? String(r.error ?? '') }
  }

  static start(opts: DatapathOptions): Datapath {
    ensureBpffs(opts.pinRoot)
    preparePinnedSizes(opts.pinRoot, opts.mapSizes ?? DEFAULT_MAP_SIZES, opts.takeover !== undefined)
    const from = object('from-endpoint', opts)
    let dp: Datapath | undefined
    try {
      checkLayout(from)
      const to = object('to-endpoint', opts) // shares the pinned maps
      dp = new Datapath(opts, from, to)
      writeConfig(from, opts.mode, opts.proxyAddress)
      if (opts.takeover) {
        ensureMode(opts.mode, dp.run, opts.proxyPorts, opts.proxyAddress)
        dp.writer.record()
      } else setupMode(opts.mode, dp.run, opts.proxyPorts, opts.proxyAddress)
      // The transparent modes' accepted sockets carry the flows' own tuples; one left in TIME_WAIT
      // would be matched by TCP early demux to a later, unsteered flow reusing the tuple, which IP
      // forwarding then drops (a packet with a socket is never forwarded). Off while the datapath
      // runs; put back as it was at stop (those sockets outlive the proxy by a minute: a flow
      // that reuses one's tuple in that minute may stall, as the README says).
      if (opts.mode !== 'dnat') {
        const previous = dp.inNode(() => setSysctl(EARLY_DEMUX, '0'))
        dp.earlyDemux = opts.takeover ? opts.takeover.earlyDemux : previous
      }
      // sk-lookup mode steers by the socket lookup itself. And sk_assign hands a SYN that reuses
      // the tuple of a proxy socket in TIME_WAIT to that socket; the kernel then looks for a
      // listener, and sk_lookup makes it find the proxy's (TPROXY does this itself).
      if (usesSkLookup(opts.mode)) {
        const obj = object('sk-lookup', opts)
        dp.skLookup = { obj, link: -1 }
        dp.skLookup.link = attachSkLookup(obj.programFd('steer_to_proxy'), opts.netns)
      }
      if (dp.cgroup) {
        const sockops = object('sockops', opts)
        const skMsg = object('sk-msg', opts)
        dp.sockmap = { sockops, skMsg }
        attachSockops(sockops.programFd('steer_sockets'), dp.cgroup)
        attachSkMsg(skMsg.programFd('redirect_payload'), from.map('l7_sockhash').fd)
      }
      return dp
    } catch (e) {
      if (dp) dp.stop()
      else from.close()
      const err = e as BpfError
      throw new BpfError(err.code ?? 'EATTACH', `redirect mode '${opts.mode}' cannot start here: ${err.message}`, {
        errno: err.errno,
        verifierLog: err.verifierLog,
      })
    }
  }

  /**
   * Attaches the programs to a host veth (node side), once; `endpointId` when an endpoint is
   * behind it (its policy is written for that interface from then on).
   */
  attach(ifname: string, endpointId?: number): number {
    const ifindex =
      this.attached.get(ifname) ??
      this.inNode(() => {
        const idx = ifindexOf(ifname)
        if (attachTc(idx, 'ingress', this.fromEndpoint.programFd('from_endpoint'))) this.ownClsact.add(idx)
        attachTc(idx, 'egress', this.toEndpoint.programFd('to_endpoint'))
        return idx
      })
    this.attached.set(ifname, ifindex)
    if (endpointId !== undefined) this.byEndpoint.set(endpointId, ifindex)
    return ifindex
  }

  /**
   * An endpoint the maps have no room for: its interface denies everything both ways (an entry
   * that enforces, for endpoint 0, which has no policy), until endQuarantine() or the endpoint's
   * own entry replaces it. Returns the interface's index, for endQuarantine().
   */
  quarantine(ifname: string): number {
    const ifindex = this.attach(ifname)
    this.fromEndpoint
      .map('l7_endpoints')
      .update(u32(ifindex), endpointValue(0, RESERVED_IDENTITIES.init, { ingress: true, egress: true }))
    return ifindex
  }

  /** Takes a quarantine entry away: the endpoint left. (One taken after all has its own entry over it.) */
  endQuarantine(ifindex: number): void {
    this.fromEndpoint.map('l7_endpoints').delete(u32(ifindex))
  }

  /** An endpoint gone (after its removal was applied): its interface stays attached, as any other. */
  forgetEndpoint(endpointId: number): void {
    this.byEndpoint.delete(endpointId)
  }

  /**
   * Tells the datapath which socket is the proxy on `port`: in sk-lookup mode steered
   * connections (a listener) and datagrams (a UDP socket) go to it; in sk-assign and sockmap
   * modes a SYN reusing a steered tuple whose proxy socket is in TIME_WAIT does. Without one,
   * they are dropped. Any socket of a SO_REUSEPORT group stands for the group. (A UDP socket is
   * registered only where it is selected this way: in a sockhash it reads through sockmap's code.)
   */
  addProxySocket(port: number, protocol: 'tcp' | 'udp', socketFd: number): void {
    if (!this.skLookup || (protocol === 'udp' && this.opts.mode !== 'sk-lookup')) return
    addProxySocket(this.fromEndpoint.map('l7_proxy_sockets'), port, protocol, socketFd)
  }

  /**
   * The HTTP proxy's listeners, one per thread, in one SO_REUSEPORT group: new connections go to
   * them in turn (reuseport.bpf.c), whichever way they were steered.
   */
  spreadHttp(socketFds: readonly number[]): void {
    this.reuseport ??= object('reuseport', this.opts)
    const obj = this.reuseport
    spreadOver(obj.map('l7_http_threads'), obj.map('l7_spread'), socketFds, obj.programFd('spread_connections'))
  }

  apply(delta: EngineDelta): WriteStats {
    return this.writer.apply(delta)
  }

  /** Taking over: removes the entries only the agent before had (once this one wrote its state); how many. */
  pruneStale(): number {
    return this.writer.pruneUnrecorded()
  }

  /** tcp_early_demux as it was before the first agent's datapath changed it (null: unchanged), for the next agent. */
  get earlyDemuxBefore(): string | null {
    return this.earlyDemux
  }

  /**
   * Another agent has taken over: stop() closes this process's handles without detaching or
   * removing anything (the programs, maps, node state and settings are the other agent's now).
   */
  release(): void {
    this.released = true
  }

  get isReleased(): boolean {
    return this.released
  }

  /** What the kernel's policy map holds for an endpoint, decoded (for `l7proxy bpf policy get`). */
  policyEntries(endpointId: number): Array<PolicyMapKey & { deny: boolean; proxyPort: number }> {
    const map = this.fromEndpoint.map('l7_policy')
    const out: Array<PolicyMapKey & { deny: boolean; proxyPort: number }> = []
    for (const k of map.keys()) {
      const key = decodePolicyKey(k)
      if (key.endpointId !== endpointId) continue
      const v = map.lookup(k)
      if (v) out.push({ ...key, ...decodePolicyValue(v) })
    }
    return out
  }

  counters(): Counter[] {
    return readCounters(this.fromEndpoint)
  }

  /** Runs and run time of each of the datapath's programs, by name (zero unless statistics are on: program-stats.ts). */
  programStats(): Record<string, ProgramStats> {
    const programs: Array<[BpfObject | undefined, string]> = [
      [this.fromEndpoint, 'from_endpoint'],
      [this.toEndpoint, 'to_endpoint'],
      [this.skLookup?.obj, 'steer_to_proxy'],
      [this.reuseport ?? undefined, 'spread_connections'],
      [this.sockmap?.sockops, 'steer_sockets'],
      [this.sockmap?.skMsg, 'redirect_payload'],
    ]
    return Object.fromEntries(
      programs.flatMap(([obj, name]) => (obj ? [[name, programStats(obj.programFd(name))]] : [])),
    )
  }

  sockmapStats(): { messages: number; bytes: number } {
    return readSockmapStats(this.fromEndpoint)
  }

  /** Addresses that connections conntrack holds alive go to (an FQDN address in use stays allowed). */
  liveDestinations(): Set<string> {
    return liveCtDestinations(this.fromEndpoint, process.hrtime.bigint())
  }

  originalDestination(clientAddress: string, clientPort: number, protocol: 'tcp' | 'udp') {
    return originalDestination(this.proxymapFd, clientAddress, clientPort, protocol)
  }

  /** The proxymap's fd, for proxy threads that read it themselves (originalDestination in map-layout.ts). */
  get proxymapFd(): number {
    return this.fromEndpoint.map('l7_proxymap').fd
  }

  /** The loaded from-endpoint object (its maps), for inspection. */
  get object(): BpfObject {
    return this.fromEndpoint
  }

  /**
   * Detaches everything, removes the mode's node state and the sockmap cgroup it made, and closes the
   * objects. Pinned maps stay (a restart picks them up) unless the bpffs is removed too.
   */
  stop(): void {
    if (this.stopped) return
    this.stopped = true
    if (this.released) return this.closeHandles()
    if (this.sockmap && this.cgroup) {
      detachSkMsg(this.sockmap.skMsg.programFd('redirect_payload'), this.fromEndpoint.map('l7_sockhash').fd)
      detachSockops(this.sockmap.sockops.programFd('steer_sockets'), this.cgroup)
    }
    if (this.cgroup && this.ownCgroup) removeCgroup(this.cgroup)
    else if (this.cgroup) releaseCgroup2Root()
    try {
      this.inNode(() => {
        for (const ifindex of this.attached.values()) {
          detachTc(ifindex, 'ingress')
          detachTc(ifindex, 'egress')
          if (this.ownClsact.has(ifindex)) removeClsact(ifindex)
        }
      })
    } catch {
      // The namespace or its interfaces are gone already: so are the attachments.
    }
    teardownModes(this.run)
    if (this.earlyDemux !== null) {
      const previous = this.earlyDemux
      try {
        this.inNode(() => setSysctl(EARLY_DEMUX, previous))
      } catch {
        // The namespace is gone: so is its setting.
      }
    }
    this.closeHandles()
  }

  /** Closes this process's objects; what is attached elsewhere (a link's fd aside) stays. */
  private closeHandles(): void {
    if (this.sockmap) {
      this.sockmap.sockops.close()
      this.sockmap.skMsg.close()
    }
    // An sk_lookup link goes with its fd (released: the agent that took over attached its own).
    if (this.skLookup && this.skLookup.link >= 0) detachSkLookup(this.skLookup.link)
    this.skLookup?.obj.close()
    this.reuseport?.close()
    this.fromEndpoint.close()
    this.toEndpoint.close()
  }
}
