// Header fields whose handling is the proxy's, not the policy's: hop-by-hop fields (RFC 9110
// 7.6.1, never forwarded), Expect (answered by the proxy), and the fields that say where a
// request goes and where it ends (Host, Content-Length), which the rules judged as received.

export const HOP_BY_HOP_FIELDS: readonly string[] = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
]

/** Lower-case names: a policy's headerMatches may not rewrite them, and a request may not carry a look-alike ('_' for '-'). */
export const PROXY_OWNED_FIELDS: ReadonlySet<string> = new Set([...HOP_BY_HOP_FIELDS, 'host', 'content-length'])
