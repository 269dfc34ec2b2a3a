// Malformed policy documents: each gets a specific error at its location, and nothing already
// loaded changes.

import t from 'tap'
import { PolicyEngine } from '../policy/engine.js'
import { PolicyError } from '../policy/errors.js'
import { parsePolicyText } from '../policy/parse.js'

const HEAD = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: p
spec:
  endpointSelector:
    matchLabels: { app: a }
`
/** A CNP whose spec continues with `body` (indented under spec, starting at line 8). */
const cnp = (body: string) => HEAD + body

interface Case {
  name: string
  text: string
  line: number
  path: string
  message: RegExp
}

const cases: Case[] = [
  {
    name: 'YAML syntax error',
    text: 'apiVersion: cilium.io/v2\nkind: [unclosed\n',
    line: 3,
    path: '',
    message: /YAML:/,
  },
  {
    name: 'duplicate key',
    text: 'apiVersion: a\napiVersion: b\nkind: NetworkPolicy\n',
    line: 2,
    path: '',
    message: /YAML: Map keys must be unique/,
  },
  { name: 'not a mapping', text: '- just\n- a list\n', line: 1, path: '', message: /expected a mapping, got a list/ },
  {
    name: 'missing kind',
    text: 'apiVersion: cilium.io/v2\nmetadata: { name: p }\nspec: {}\n',
    line: 1,
    path: '',
    message: /missing required field 'kind'/,
  },
  {
    name: 'unknown kind',
    text: 'apiVersion: cilium.io/v2\nkind: CiliumPolicy\nmetadata: { name: p }\n',
    line: 2,
    path: 'kind',
    message: /unknown kind 'CiliumPolicy'; expected one of: CiliumNetworkPolicy/,
  },
  {
    name: 'wrong apiVersion',
    text: 'apiVersion: cilium.io/v1\nkind: CiliumNetworkPolicy\nmetadata: { name: p }\nspec: {}\n',
    line: 1,
    path: 'apiVersion',
    message: /needs apiVersion 'cilium.io\/v2', got 'cilium.io\/v1'/,
  },
  {
    name: 'missing name',
    text: 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {}\nspec: {}\n',
    line: 3,
    path: 'metadata',
    message: /missing required field 'name'/,
  },
  {
    name: 'bad name',
    text: 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: { name: Bad_Name }\nspec: {}\n',
    line: 3,
    path: 'metadata.name',
    message: /'Bad_Name' is not a valid name/,
  },
  {
    name: 'unknown top-level field',
    text: HEAD.replace('spec:', 'sepc: 1\nspec:'),
    line: 5,
    path: 'sepc',
    message: /unknown field 'sepc'; expected one of: apiVersion, kind, metadata, spec, specs, status/,
  },
  {
    name: 'spec and specs both',
    text: `${HEAD}specs: []\n`,
    line: 1,
    path: '',
    message: /exactly one of 'spec' or 'specs'/,
  },
  {
    name: 'missing endpointSelector',
    text: 'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: { name: p }\nspec:\n  ingress: []\n',
    line: 5,
    path: 'spec',
    message: /missing required field 'endpointSelector'/,
  },
  {
    name: 'unknown spec field',
    text: cnp('  ingres: []\n'),
    line: 8,
    path: 'spec.ingres',
    message: /unknown field 'ingres'/,
  },
  {
    name: 'matchLabels not a map',
    text: cnp('  ingress:\n  - fromEndpoints: [ { matchLabels: [a] } ]\n'),
    line: 9,
    path: 'spec.ingress[0].fromEndpoints[0].matchLabels',
    message: /expected a mapping of strings, got a list/,
  },
  {
    name: 'bad operator',
    text: cnp(
      '  ingress:\n  - fromEndpoints:\n    - matchExpressions: [ { key: a, operator: Equals, values: [x] } ]\n',
    ),
    line: 10,
    path: 'spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator',
    message: /unknown operator 'Equals'; expected one of: In, NotIn, Exists, DoesNotExist/,
  },
  {
    name: 'In without values',
    text: cnp('  ingress:\n  - fromEndpoints:\n    - matchExpressions: [ { key: a, operator: In } ]\n'),
    line: 10,
    path: 'spec.ingress[0].fromEndpoints[0].matchExpressions[0]',
    message: /operator In needs a non-empty 'values' list/,
  },
  {
    name: 'Exists with values',
    text: cnp(
      '  ingress:\n  - fromEndpoints:\n    - matchExpressions: [ { key: a, operator: Exists, values: [x] } ]\n',
    ),
    line: 10,
    path: 'spec.ingress[0].fromEndpoints[0].matchExpressions[0].values',
    message: /operator Exists takes no values/,
  },
  {
    name: 'bad CIDR',
    text: cnp('  egress:\n  - toCIDR: [ "10.0.0.0/33" ]\n'),
    line: 9,
    path: 'spec.egress[0].toCIDR[0]',
    message: /'10.0.0.0\/33' has an invalid prefix length/,
  },
  {
    name: 'not an address',
    text: cnp('  egress:\n  - toCIDR: [ "deathstar" ]\n'),
    line: 9,
    path: 'spec.egress[0].toCIDR[0]',
    message: /'deathstar' is not an IPv4 address or CIDR/,
  },
  {
    name: 'IPv6 CIDR',
    text: cnp('  egress:\n  - toCIDR: [ "2001:db8::/32" ]\n'),
    line: 9,
    path: 'spec.egress[0].toCIDR[0]',
    message: /IPv6, which is not supported yet/,
  },
  {
    name: 'except outside cidr',
    text: cnp('  egress:\n  - toCIDRSet:\n    - { cidr: 192.0.2.0/24, except: [ 203.0.113.0/25 ] }\n'),
    line: 10,
    path: 'spec.egress[0].toCIDRSet[0].except[0]',
    message: /except '203.0.113.0\/25' is not inside cidr '192.0.2.0\/24'/,
  },
  {
    name: 'unknown entity',
    text: cnp('  egress:\n  - toEntities: [ galaxy ]\n'),
    line: 9,
    path: 'spec.egress[0].toEntities[0]',
    message: /unknown entity 'galaxy'; expected one of: all, world, cluster/,
  },
  {
    name: 'port out of range',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "70000" } ]\n'),
    line: 10,
    path: 'spec.ingress[0].toPorts[0].ports[0].port',
    message: /expected an integer from 0 to 65535/,
  },
  {
    name: 'named port',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: http } ]\n'),
    line: 10,
    path: 'spec.ingress[0].toPorts[0].ports[0].port',
    message: /named ports \('http'\) are not supported/,
  },
  {
    name: 'endPort below port',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "90", endPort: 80 } ]\n'),
    line: 10,
    path: 'spec.ingress[0].toPorts[0].ports[0].endPort',
    message: /endPort 80 is below port 90/,
  },
  {
    name: 'unsupported protocol',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "80", protocol: ICMP } ]\n'),
    line: 10,
    path: 'spec.ingress[0].toPorts[0].ports[0].protocol',
    message: /unsupported protocol 'ICMP'; expected one of: TCP, UDP, ANY/,
  },
  {
    name: 'toPorts without ports',
    text: cnp('  ingress:\n  - toPorts:\n    - rules: { http: [ {} ] }\n'),
    line: 10,
    path: 'spec.ingress[0].toPorts[0]',
    message: /missing required field 'ports'/,
  },
  {
    name: 'catastrophic path regex',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [ { path: "/(a{2,200})+x" } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.http[0].path',
    message: /could backtrack catastrophically/,
  },
  {
    name: 'invalid regex',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [ { method: "GET(" } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.http[0].method',
    message: /invalid regular expression/,
  },
  {
    name: 'lookahead is not RE2',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [ { path: "/(?!admin).*" } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.http[0].path',
    message: /lookahead and lookbehind are not RE2 syntax/,
  },
  {
    name: 'bad header line',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [ { headers: [ "Bad Header: x" ] } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.http[0].headers[0]',
    message: /is not 'Header-Name' or 'Header-Name: value'/,
  },
  {
    name: 'CR or LF in a header value the proxy would write',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [ { headerMatches: [ { name: X, value: "a\\r\\nX-Injected: 1", mismatch: ADD } ] } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].value',
    message: /must not contain CR, LF or NUL/,
  },
  {
    name: 'bad mismatch action',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [ { headerMatches: [ { name: X, value: y, mismatch: DROP } ] } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].mismatch',
    message: /unknown mismatch action 'DROP'/,
  },
  {
    name: 'http and dns together',
    text: cnp(
      '  egress:\n  - toPorts:\n    - ports: [ { port: "53" } ]\n      rules: { http: [ {} ], dns: [ { matchName: a } ] }\n',
    ),
    line: 11,
    path: 'spec.egress[0].toPorts[0].rules',
    message: /either http or dns rules, not both/,
  },
  {
    name: 'dns at ingress',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "53" } ]\n      rules: { dns: [ { matchName: a } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.dns',
    message: /dns rules apply only at egress/,
  },
  {
    name: 'dns rule with both fields',
    text: cnp(
      '  egress:\n  - toPorts:\n    - ports: [ { port: "53" } ]\n      rules: { dns: [ { matchName: a, matchPattern: "*" } ] }\n',
    ),
    line: 11,
    path: 'spec.egress[0].toPorts[0].rules.dns[0]',
    message: /exactly one of matchName or matchPattern/,
  },
  {
    name: 'bad matchPattern characters',
    text: cnp('  egress:\n  - toFQDNs: [ { matchPattern: "*.empire/x" } ]\n'),
    line: 9,
    path: 'spec.egress[0].toFQDNs[0].matchPattern',
    message: /may only contain letters, digits/,
  },
  {
    name: 'L7 rules in a deny',
    text: cnp('  ingressDeny:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [ {} ] }\n'),
    line: 11,
    path: 'spec.ingressDeny[0].toPorts[0].rules',
    message: /deny rules cannot have L7 rules/,
  },
  {
    name: 'toFQDNs in egressDeny',
    text: cnp('  egressDeny:\n  - toFQDNs: [ { matchName: a.b } ]\n'),
    line: 9,
    path: 'spec.egressDeny[0].toFQDNs',
    message: /toFQDNs is not allowed in egressDeny/,
  },
  {
    name: 'unsupported toServices',
    text: cnp('  egress:\n  - toServices: [ {} ]\n'),
    line: 9,
    path: 'spec.egress[0].toServices',
    message: /toServices is not supported/,
  },
  {
    name: 'unsupported kafka rules',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "9092" } ]\n      rules: { kafka: [ {} ] }\n'),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.kafka',
    message: /kafka rules are not supported/,
  },
  {
    name: 'grpc and dns together',
    text: cnp(
      '  egress:\n  - toPorts:\n    - ports: [ { port: "53" } ]\n      rules: { grpc: [ { service: a.B } ], dns: [ { matchName: a } ] }\n',
    ),
    line: 11,
    path: 'spec.egress[0].toPorts[0].rules',
    message: /either grpc or dns rules, not both/,
  },
  {
    name: 'grpc rule without service',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "50051" } ]\n      rules: { grpc: [ { method: Get } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.grpc[0]',
    message: /missing required field 'service'/,
  },
  {
    name: 'grpc service not a name',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "50051" } ]\n      rules: { grpc: [ { service: "empire.*" } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.grpc[0].service',
    message: /'empire\.\*' is not a gRPC service name \(package\.Service\)/,
  },
  {
    name: 'grpc method with a slash',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "50051" } ]\n      rules: { grpc: [ { service: a.B, method: "C/D" } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.grpc[0].method',
    message: /'C\/D' is not a gRPC method name/,
  },
  {
    name: 'unknown grpc rule field',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "50051" } ]\n      rules: { grpc: [ { service: a.B, methods: [C] } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.grpc[0].methods',
    message: /unknown field 'methods'; expected one of: service, method/,
  },
  {
    name: 'serverNames with http rules',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      serverNames: [ a.b ]\n      rules: { http: [ {} ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].serverNames',
    message: /serverNames and http rules on one port need TLS interception \(terminatingTLS\)/,
  },
  {
    name: 'serverNames not a host name',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      serverNames: [ "api/empire" ]\n'),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].serverNames[0]',
    message: /server name 'api\/empire' may only contain letters/,
  },
  {
    name: 'serverNames with a trailing dot',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      serverNames: [ "api.empire." ]\n'),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].serverNames[0]',
    message: /must not end with a dot/,
  },
  {
    name: 'serverNames with an empty label',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      serverNames: [ "api..empire" ]\n'),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].serverNames[0]',
    message: /server name 'api\.\.empire' has an empty label/,
  },
  {
    name: 'serverNames with three stars',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      serverNames: [ "***.empire" ]\n'),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].serverNames[0]',
    message: /label '\*\*\*' may hold '\*\*' alone or single '\*'s/,
  },
  {
    name: 'matchName with an empty label',
    text: cnp('  egress:\n  - toFQDNs: [ { matchName: "example..com" } ]\n'),
    line: 9,
    path: 'spec.egress[0].toFQDNs[0].matchName',
    message: /matchName 'example\.\.com' has an empty label/,
  },
  {
    name: 'matchPattern with an empty label',
    text: cnp(
      '  egress:\n  - toPorts:\n    - ports: [ { port: "53" } ]\n      rules: { dns: [ { matchPattern: "*..empire" } ] }\n',
    ),
    line: 11,
    path: 'spec.egress[0].toPorts[0].rules.dns[0].matchPattern',
    message: /has an empty label/,
  },
  {
    name: 'headerMatches rewriting framing',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [ { headerMatches: [ { name: Content-Length, value: "0", mismatch: REPLACE } ] } ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.http[0].headerMatches[0].mismatch',
    message:
      /mismatch REPLACE cannot change 'Content-Length': the proxy writes framing, Host and hop-by-hop fields itself/,
  },
  {
    name: 'empty serverNames',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      serverNames: []\n'),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].serverNames',
    message: /expected at least one server name/,
  },
  {
    name: 'serverNames in a deny',
    text: cnp('  ingressDeny:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      serverNames: [ a.b ]\n'),
    line: 11,
    path: 'spec.ingressDeny[0].toPorts[0].serverNames',
    message: /deny rules cannot have serverNames/,
  },
  {
    name: 'terminatingTLS without originatingTLS',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      terminatingTLS: {}\n      rules: { http: [ {} ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].terminatingTLS',
    message: /terminatingTLS needs originatingTLS too/,
  },
  {
    name: 'terminatingTLS with a secret',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      terminatingTLS: { secret: { name: s } }\n      originatingTLS: {}\n      rules: { http: [ {} ] }\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].terminatingTLS.secret',
    message: /secret is not supported in terminatingTLS: l7proxy mints the certificates from its local CA/,
  },
  {
    name: 'interception without http rules',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      terminatingTLS: {}\n      originatingTLS: {}\n',
    ),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].terminatingTLS',
    message: /TLS interception needs http rules/,
  },
  {
    name: 'relative trustedCA',
    text: cnp(
      '  ingress:\n  - toPorts:\n    - ports: [ { port: "443" } ]\n      terminatingTLS: {}\n      originatingTLS: { trustedCA: ca.pem }\n      rules: { http: [ {} ] }\n',
    ),
    line: 12,
    path: 'spec.ingress[0].toPorts[0].originatingTLS.trustedCA',
    message: /trustedCA must be an absolute path/,
  },
  {
    name: 'empty http rule list',
    text: cnp('  ingress:\n  - toPorts:\n    - ports: [ { port: "80" } ]\n      rules: { http: [] }\n'),
    line: 11,
    path: 'spec.ingress[0].toPorts[0].rules.http',
    message: /expected at least one http rule/,
  },
  {
    name: 'enableDefaultDeny not boolean',
    text: cnp('  enableDefaultDeny: { ingress: "no" }\n'),
    line: 8,
    path: 'spec.enableDefaultDeny.ingress',
    message: /expected true or false, got the string 'no'/,
  },
  {
    name: 'nodeSelector',
    text: cnp('  nodeSelector: {}\n'),
    line: 8,
    path: 'spec.nodeSelector',
    message: /host policies\) is not supported/,
  },
  {
    name: 'clusterwide with namespace',
    text: 'apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: { name: p, namespace: x }\nspec: {}\n',
    line: 3,
    path: 'metadata.namespace',
    message: /a clusterwide policy has no namespace/,
  },
  {
    name: 'k8s ipBlock with podSelector',
    text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: p }\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - { ipBlock: { cidr: 10.0.0.0/8 }, podSelector: {} }\n',
    line: 8,
    path: 'spec.ingress[0].from[0]',
    message: /ipBlock cannot be combined with podSelector or namespaceSelector/,
  },
  {
    name: 'k8s unknown policy type',
    text: 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: p }\nspec:\n  podSelector: {}\n  policyTypes: [ Ingress, Sideways ]\n',
    line: 6,
    path: 'spec.policyTypes[1]',
    message: /unknown policy type 'Sideways'/,
  },
  {
    name: 'same policy twice in a file',
    text: `${HEAD}---\n${HEAD}`,
    line: 9,
    path: 'metadata.name',
    message: /policy CiliumNetworkPolicy\/default\/p is defined twice in this file \(first at line 6\)/,
  },
  {
    name: 'YAML alias',
    text: cnp('  ingress:\n  - fromEndpoints: [ &sel { matchLabels: { a: b } }, *sel ]\n'),
    line: 9,
    path: 'spec.ingress[0].fromEndpoints[1]',
    message: /expected a mapping, got an unsupported YAML node/,
  },
]

t.test(`${cases.length} malformed documents, each rejected at its place`, async (t) => {
  t.ok(cases.length >= 30, 'corpus has at least 30 cases')
  for (const c of cases) {
    let err: unknown
    try {
      parsePolicyText(c.text, 'bad.yaml')
    } catch (e) {
      err = e
    }
    if (!(err instanceof PolicyError)) {
      t.fail(`${c.name}: expected a PolicyError, got ${err === undefined ? 'success' : String(err)}`)
      continue
    }
    const hit = err.issues.find((i) => i.path === c.path && c.message.test(i.message))
    t.ok(hit, `${c.name}: ${err.message}`)
    t.equal(hit?.file, 'bad.yaml', `${c.name}: names the file`)
    t.equal(hit?.line, c.line, `${c.name}: at line ${c.line}`)
    t.ok((hit?.column ?? 0) >= 1, `${c.name}: with a column`)
    t.match(err.message, new RegExp(`^bad\\.yaml:${c.line}:\\d+: `, 'm'), `${c.name}: message starts file:line:col`)
  }
})

t.test('several problems in one document are all reported', async (t) => {
  const text = cnp(
    '  ingress:\n  - toPorts:\n    - ports: [ { port: "70000" }, { port: "1", protocol: SCTP } ]\n    bogus: 1\n',
  )
  t.throws(() => parsePolicyText(text, 'f.yaml'), PolicyError)
  try {
    parsePolicyText(text, 'f.yaml')
  } catch (e) {
    const paths = (e as PolicyError).issues.map((i) => i.path)
    t.same(paths, [
      'spec.ingress[0].toPorts[0].ports[0].port',
      'spec.ingress[0].toPorts[0].ports[1].protocol',
      'spec.ingress[0].bogus',
    ])
  }
})

t.test('a rejected file changes nothing already loaded', async (t) => {
  const engine = new PolicyEngine({ proxyPorts: { http: 15001, dns: 15053 } })
  engine.upsertEndpoint({ id: 1, labels: { app: 'a', 'io.kubernetes.pod.namespace': 'default' }, ips: ['198.18.1.1'] })
  const peer = engine.addIdentity({ app: 'b', 'io.kubernetes.pod.namespace': 'default' })
  const good = cnp(
    '  ingress:\n  - fromEndpoints: [ { matchLabels: { app: b } } ]\n    toPorts: [ { ports: [ { port: "80", protocol: TCP } ] } ]\n',
  )
  engine.loadFile('p.yaml', good)
  engine.takeDelta()
  const before = engine.policyMap(1)
  const rulesBefore = engine.rules()
  const revision = engine.policyRevision
  for (const c of cases) {
    t.throws(() => engine.loadFile('p.yaml', c.text), PolicyError, `${c.name} refused`)
  }
  t.throws(
    () => engine.loadFile('other.yaml', good),
    { code: 'EPOLICY', message: /already loaded from p\.yaml/ },
    'a name clash across files is refused too',
  )
  t.same(engine.policyMap(1), before, 'map state unchanged')
  t.same(engine.rules(), rulesBefore, 'rules unchanged')
  t.equal(engine.policyRevision, revision, 'revision unchanged')
  const d = engine.takeDelta()
  t.equal(d.policy.size, 0, 'no map delta')
  t.equal(d.ipcache.upserts.length + d.ipcache.deletes.length, 0, 'no ipcache delta')
  t.equal(engine.decide(1, 'ingress', peer, 6, 80).verdict, 'allow', 'the good policy still applies')
})
