// `l7proxy cni install`: puts the l7proxy-cni plugin where container runtimes look for plugins (a
// small script that runs it with this Node) and a network configuration list named `l7proxy`
// next to the others: `podman run --network l7proxy ...` then joins containers through it.

import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { distPath } from '../../lib/project-root.js'
import { parsePrefix } from '../../policy/cidr.js'
import { agentSocketPath } from '../agent/admin-socket.js'
import { UsageError } from './usage-error.js'

export const CNI_USAGE = `  cni install [--bin-dir DIR] [--conf-dir DIR] [--subnet CIDR] [--socket PATH] [--ipam-dir DIR]
                            install the l7proxy-cni plugin (default /opt/cni/bin) and the network
                            l7proxy (default /etc/cni/net.d/l7proxy.conflist): containers get
                            addresses from CIDR (default 10.222.0.0/16) and join the agent on PATH`

/** The network configuration list podman and other runtimes read. */
export function networkConfig(o: { subnet: string; socket: string; ipamDir: string | null }): string {
  const ipam = { type: 'host-local', ranges: [[{ subnet: o.subnet }]], ...(o.ipamDir ? { dataDir: o.ipamDir } : {}) }
  return `${JSON.stringify({ cniVersion: '1.0.0', name: 'l7proxy', plugins: [{ type: 'l7proxy-cni', agentSocket: o.socket, ipam }] }, null, 2)}\n`
}

export function cniCommand(args: string[], out: (s: string) => void): number {
  const [sub, ...rest] = args
  if (sub !== 'install')
    throw new UsageError(
      sub === undefined ? "'cni' needs a subcommand: install" : `unknown cni subcommand '${sub}' (expected install)`,
    )
  let v: { 'bin-dir'?: string; 'conf-dir'?: string; subnet?: string; socket?: string; 'ipam-dir'?: string }
  try {
    ;({ values: v } = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        'bin-dir': { type: 'string' },
        'conf-dir': { type: 'string' },
        subnet: { type: 'string' },
        socket: { type: 'string' },
        'ipam-dir': { type: 'string' },
      },
    }))
  } catch (e) {
    throw new UsageError(`cni install: ${(e as Error).message}`)
  }
  const subnet = v.subnet ?? '10.222.0.0/16'
  const prefix = parsePrefix(subnet)
  if (typeof prefix === 'string' || prefix.len > 30)
    throw new UsageError(`cni install: --subnet '${subnet}' is not an IPv4 subnet of at least 4 addresses`)
  for (const [flag, path] of [
    ['--bin-dir', v['bin-dir']],
    ['--conf-dir', v['conf-dir']],
    ['--socket', v.socket],
    ['--ipam-dir', v['ipam-dir']],
  ] as const) {
    if (path !== undefined && !path.startsWith('/'))
      throw new UsageError(`cni install: ${flag} must be an absolute path, not '${path}'`)
  }
  const binDir = v['bin-dir'] ?? '/opt/cni/bin'
  const confDir = v['conf-dir'] ?? '/etc/cni/net.d'
  mkdirSync(binDir, { recursive: true })
  mkdirSync(confDir, { recursive: true })
  const plugin = join(binDir, 'l7proxy-cni')
  writeFileSync(
    plugin,
    `#!/bin/sh\n# l7proxy's CNI plugin (l7proxy cni install)\nexec '${process.execPath}' '${distPath('proxy/cni/cni-plugin.js')}' "$@"\n`,
    { mode: 0o755 },
  )
  const conf = join(confDir, 'l7proxy.conflist')
  writeFileSync(
    conf,
    networkConfig({ subnet, socket: v.socket ?? agentSocketPath(null), ipamDir: v['ipam-dir'] ?? null }),
  )
  out(`installed ${plugin} and ${conf} (network l7proxy, ${subnet})\n`)
  return 0
}
