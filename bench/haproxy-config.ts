// HAProxy's configuration for the HTTP benchmark: a transparent listener on the port the datapath
// steers to, the same method/path rules as the l7proxy policy (anchored, matched on the path with
// its query, as l7proxy and Envoy match), and each request forwarded to its original destination.

export interface BenchRule {
  method: string
  path: string
}

export function haproxyConfig(o: { rules: readonly BenchRule[]; listen: string; port: number; threads: number }): string {
  const allow = o.rules.map((r) => `  http-request allow if { method -m reg ^(?:${r.method})$ } { pathq -m reg ^(?:${r.path})$ }`)
  return [
    'global',
    `  nbthread ${o.threads}`,
    '  maxconn 4000',
    'defaults',
    '  mode http',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    '  option http-keep-alive',
    'frontend steered',
    `  bind ${o.listen}:${o.port} transparent`,
    ...allow,
    '  http-request deny deny_status 403',
    '  default_backend original_destination',
    'backend original_destination',
    '  http-reuse always',
    // 0.0.0.0 with no port: connect to the address and port the client connected to.
    '  server original 0.0.0.0:0',
    '',
  ].join('\n')
}
