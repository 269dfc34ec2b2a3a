import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { projectRoot } from '../lib/project-root.js'
import { runCli } from './fixtures/cli.js'

const badArgs: Array<[string[], RegExp]> = [
  [[], /error: no command given/],
  [['frobnicate'], /error: unknown command 'frobnicate'/],
  [['lab'], /error: 'lab' needs a subcommand: up, down or status/],
  [['lab', 'sideways'], /error: unknown lab subcommand 'sideways'/],
  [['lab', 'up', '--bogus'], /error: lab up: Unknown option '--bogus'/],
  [['lab', 'up', 'extra'], /error: lab up: .*positional/i],
  [['lab', 'up', '--name', 'Bad_Name'], /error: lab up: invalid --name 'Bad_Name'/],
  [['lab', 'down', '--name', 'x'.repeat(17)], /error: lab down: invalid --name/],
  [['lab', 'status', '-o', 'yaml'], /error: -o must be 'table' or 'json', got 'yaml'/],
  [['lab', 'status', '--name', 'main'], /error: lab status: Unknown option '--name'/],
  [
    ['agent', '--mode', 'magic'],
    /error: agent: unknown --mode 'magic' \(expected one of: tproxy, sk-assign, dnat, sockmap, sk-lookup\)/,
  ],
  [['agent', '--threads', '0'], /error: agent: --threads must be a whole number from 1 to 64, not '0'/],
  [['agent', '--lab', 'Bad_Name'], /error: agent: invalid --lab 'Bad_Name'/],
  [['agent', '--frob'], /error: agent: Unknown option '--frob'/],
  [['status', '--bogus'], /error: status: Unknown option '--bogus'/],
  [['status', '-o', 'yaml'], /error: -o must be 'table' or 'json', got 'yaml'/],
  [['endpoint'], /error: 'endpoint' needs the subcommand list/],
  [['identity', 'show'], /error: 'identity' needs the subcommand list, not 'show'/],
  [['endpoint', 'list', '--lab', 'Bad_Name'], /error: endpoint list: invalid --lab 'Bad_Name'/],
  [['fqdn'], /error: 'fqdn' needs the subcommand 'cache list' or 'cache clean'/],
  [['fqdn', 'cache', 'flush'], /error: 'fqdn' needs the subcommand 'cache list' or 'cache clean'/],
  [['fqdn', 'cache', 'clean', '--bogus'], /error: fqdn cache clean: Unknown option '--bogus'/],
  [['bpf'], /error: 'bpf' needs the subcommand 'policy get ENDPOINT'/],
  [
    ['bpf', 'policy', 'get', 'deathstar'],
    /error: bpf policy get: give an endpoint id \(see l7proxy endpoint list\), not 'deathstar'/,
  ],
  [['flows', '--count', '0'], /error: flows: --count must be at least 1/],
  [['flows', '--last', 'x'], /error: flows: --last must be a whole number from 0 to 1000, not 'x'/],
  [['flows', '--bogus'], /error: flows: Unknown option '--bogus'/],
  [['flows', '-o', 'xml'], /error: -o must be 'table' or 'json', got 'xml'/],
  [['policy'], /error: 'policy' needs a subcommand: validate, get, import or remove/],
  [['policy', 'import'], /error: policy import: give at least one FILE/],
  [['policy', 'import', 'x.yaml', '--lab', 'Bad_Name'], /error: policy import: invalid --lab 'Bad_Name'/],
  [['policy', 'get', '--frob'], /error: policy get: Unknown option '--frob'/],
  [['policy', 'apply', 'x.yaml'], /error: unknown policy subcommand 'apply'/],
  [['policy', 'validate'], /error: policy validate: give at least one FILE/],
  [['policy', 'validate', '--strict', 'x.yaml'], /error: policy validate: unknown option '--strict'/],
]

for (const [args, message] of badArgs) {
  t.test(`l7proxy ${args.join(' ') || '(nothing)'}: usage error, exit 2`, async (t) => {
    const r = runCli(args)
    t.equal(r.code, 2, 'exit code 2')
    t.match(r.stderr, message, 'names the problem')
    t.match(r.stderr, /Usage: l7proxy <command>/, 'prints usage')
    t.equal(r.stdout, '', 'nothing on stdout')
  })
}

t.test('help prints usage on stdout, exit 0', async (t) => {
  for (const arg of ['help', '--help', '-h']) {
    const r = runCli([arg])
    t.equal(r.code, 0)
    t.match(r.stdout, /Usage: l7proxy <command>[\s\S]*lab up/)
  }
})

t.test('every command takes --help: its own usage on stdout, exit 0', async (t) => {
  for (const [args, entries] of [
    [['agent', '--help'], /^ {2}agent \[--config FILE\]/m],
    [['status', '-h'], /^ {2}status \[--lab NAME/m],
    [['lab', 'up', '--help'], /^ {2}lab up[\s\S]*^ {2}lab down[\s\S]*^ {2}lab status/m],
    [['policy', '--help'], /^ {2}policy validate[\s\S]*^ {2}policy import/m],
    [['cni', 'install', '--subnet', 'bad', '--help'], /^ {2}cni install/m],
    [['compare', '--help'], /^ {2}compare \[--duration S\]/m],
  ] as const) {
    const r = runCli([...args])
    t.equal(r.code, 0, args.join(' '))
    t.match(r.stdout, new RegExp(`^Usage: l7proxy ${args[0]} `), 'says which command')
    t.match(r.stdout, entries, 'with its entries')
    t.notMatch(r.stdout, /^ {2}certs init/m, 'and only its own')
  }
  t.equal(runCli(['frob', '--help']).code, 2, 'an unknown command is still an error')
})

t.test('policy validate: ok files, located errors, exit 1 on any problem', async (t) => {
  const example = join(projectRoot(), 'policy/examples/star-wars.yaml')
  const good = runCli(['policy', 'validate', example])
  t.equal(good.code, 0, good.stderr)
  t.match(
    good.stdout,
    /star-wars\.yaml: ok, 3 rules \(CiliumNetworkPolicy\/default\/deathstar-l7, CiliumNetworkPolicy\/default\/tiefighter-egress, CiliumNetworkPolicy\/default\/deathstar-grpc\)/,
  )
  const dir = mkdtempSync(join(tmpdir(), 'l7-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const bad = join(dir, 'bad.yaml')
  writeFileSync(
    bad,
    'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: { name: x }\nspec:\n  endpointSelector: {}\n  egress:\n  - toPorts: [ { ports: [ { port: "99999" } ] } ]\n',
  )
  const r = runCli(['policy', 'validate', example, bad, join(dir, 'missing.yaml')])
  t.equal(r.code, 1)
  t.match(r.stdout, /star-wars\.yaml: ok/, 'good files are still reported')
  t.match(
    r.stderr,
    /bad\.yaml:7:\d+: spec\.egress\[0\]\.toPorts\[0\]\.ports\[0\]\.port: expected an integer from 0 to 65535/,
  )
  t.match(r.stderr, /missing\.yaml: cannot read: ENOENT/)
})
