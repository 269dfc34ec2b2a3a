// Without root: the CLI says what is missing, and kernel tests skip with the reason, or fail
// when L7PROXY_REQUIRE_KERNEL=1. Checked for real by dropping to the `nobody` user.

import { spawnSync } from 'node:child_process'
import t from 'tap'
import { distPath } from '../lib/project-root.js'

const KERNEL_TEST = distPath('test/lab.kernel.test.js')

/**
 * Runs node as `nobody` in a minimal environment, as a user would: `env -i` because tap's
 * process tracking re-adds its NODE_OPTIONS hooks to every child's env we could pass.
 */
function asNobody(args: string[], env: Record<string, string> = {}) {
  const vars = Object.entries({ PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env }).map(
    ([k, v]) => `${k}=${v}`,
  )
  const argv = [
    'env',
    '-i',
    ...vars,
    'setpriv',
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    process.execPath,
    ...args,
  ]
  return spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 60_000 })
}

const why =
  process.getuid?.() !== 0
    ? 'needs root to switch to an unprivileged user'
    : asNobody(['-e', `require('fs').accessSync(${JSON.stringify(KERNEL_TEST)})`]).status !== 0
      ? 'the checkout is not readable by nobody'
      : false

t.test('lab commands without root: a clear error, exit 1', { skip: why }, async (t) => {
  const r = asNobody([distPath('proxy/cli/main.js'), 'lab', 'status'])
  t.equal(r.status, 1)
  t.match(r.stderr, /the lab needs root \(CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces\) \[ENOTROOT\]/)
})

t.test('kernel tests skip with the reason when not required', { skip: why }, async (t) => {
  const r = asNobody([KERNEL_TEST])
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stderr, '', 'nothing on stderr')
  t.match(r.stdout, /# SKIP needs the kernel lab: the lab needs root/)
  t.notMatch(r.stdout, /^not ok/m)
})

t.test('kernel tests fail when L7PROXY_REQUIRE_KERNEL=1', { skip: why }, async (t) => {
  const r = asNobody([KERNEL_TEST], { L7PROXY_REQUIRE_KERNEL: '1' })
  t.not(r.status, 0, 'exit status says failure')
  t.match(r.stdout, /kernel test cannot run: the lab needs root .*\(L7PROXY_REQUIRE_KERNEL=1\)/)
  t.match(r.stdout, /^not ok/m)
})

t.test('loading BPF without privilege says which privilege is missing', { skip: why }, async (t) => {
  const code = `import(${JSON.stringify(distPath('redirect-bpf/bpf-object.js'))}).then((m) => m.BpfObject.load(${JSON.stringify(distPath('redirect-bpf/progs/from-endpoint.bpf.o'))}, '/tmp')).catch((e) => { console.log(e.code + ': ' + e.message); process.exit(3) })`
  const r = asNobody(['-e', code])
  t.equal(r.status, 3, r.stderr)
  t.match(
    r.stdout,
    /^EPERM: cannot load BPF object .*from-endpoint\.bpf\.o: EPERM \(needs root, or CAP_BPF \+ CAP_NET_ADMIN \+ CAP_PERFMON\)/,
  )
})
