// Configuration of the lab's DNS server (unbound from Debian). Authoritative-only: each lab zone
// is an auth-zone loaded from a zone file (so in-zone CNAME chains are answered whole, as a real
// authoritative server does), and every other name is refused: the server never recurses and
// never sends a packet anywhere.

import { DNS_RECORDS, DNS_ZONES, findHost } from '../topology.js'

export interface UnboundOptions {
  address: string
  port: number
  /** Directory holding unbound's config and zone files (the lab's state directory). */
  directory: string
  threads: number
}

export interface UnboundFiles {
  /** File name (relative to `directory`) -> content. */
  files: Record<string, string>
  configFile: string
}

function zoneFileName(zone: string): string {
  return `${zone}.zone`
}

export function zoneFile(zone: string): string {
  const ns = findHost('dns').addresses[0]
  const lines = [
    `$ORIGIN ${zone}.`,
    '$TTL 300',
    `@ IN SOA ns.${zone}. hostmaster.${zone}. 1 3600 600 86400 60`,
    `@ IN NS ns.${zone}.`,
    `ns IN A ${ns}`,
  ]
  for (const r of DNS_RECORDS) {
    if (r.name !== zone && !r.name.endsWith(`.${zone}`)) continue
    lines.push(`${r.name}. ${r.ttl} IN ${r.type} ${r.type === 'CNAME' ? `${r.data}.` : r.data}`)
  }
  return `${lines.join('\n')}\n`
}

export function unboundFiles(opts: UnboundOptions): UnboundFiles {
  const files: Record<string, string> = {}
  const config = [
    'server:',
    `  interface: ${opts.address}@${opts.port}`,
    `  directory: "${opts.directory}"`,
    '  chroot: ""',
    '  username: ""',
    '  pidfile: ""',
    '  do-daemonize: no',
    '  use-syslog: no',
    '  logfile: ""',
    '  verbosity: 0',
    '  do-ip6: no',
    `  num-threads: ${opts.threads}`,
    '  so-reuseport: yes',
    '  access-control: 0.0.0.0/0 allow',
    // Local zones are consulted before auth zones: refuse everything, and let the lab's own
    // zones through to their auth-zone.
    '  local-zone: "." refuse',
    ...DNS_ZONES.map((z) => `  local-zone: "${z}." transparent`),
  ]
  for (const zone of DNS_ZONES) {
    files[zoneFileName(zone)] = zoneFile(zone)
    config.push(
      'auth-zone:',
      `  name: "${zone}."`,
      `  zonefile: "${opts.directory}/${zoneFileName(zone)}"`,
      '  for-downstream: yes',
      '  for-upstream: no',
      '  fallback-enabled: no',
    )
  }
  config.push('remote-control:', '  control-enable: no', '')
  files['unbound.conf'] = config.join('\n')
  return { files, configFile: 'unbound.conf' }
}
