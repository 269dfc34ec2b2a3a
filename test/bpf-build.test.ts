import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import t from 'tap'
import { distPath, projectRoot } from '../lib/project-root.js'
import { buildBpf, findBpfSources } from '../redirect-bpf/build.js'
import { kernelTest } from './fixtures/kernel.js'
import { useBpffs } from './fixtures/lab.js'

const srcDir = join(projectRoot(), 'redirect-bpf')

t.test('every redirect-bpf/**/*.bpf.c has a built BPF object', async (t) => {
  const sources = findBpfSources(srcDir)
  t.ok(
    sources.some((s) => s.endsWith('progs/from-endpoint.bpf.c')),
    'the TC program is among the sources',
  )
  for (const src of sources) {
    const obj = distPath(join('redirect-bpf', relative(srcDir, src).replace(/\.c$/, '.o')))
    t.ok(existsSync(obj), `${relative(projectRoot(), obj)} exists`)
    // ELF, 64-bit, machine EM_BPF (247) at offset 18.
    const head = readFileSync(obj).subarray(0, 20)
    t.same([...head.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], 'is ELF')
    t.equal(head.readUInt16LE(18), 247, 'e_machine is EM_BPF')
  }
})

function tempTree(t: { teardown(fn: () => void): void }, program: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'l7-bpfbuild-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(join(dir, 'include'))
  mkdirSync(join(dir, 'progs'))
  writeFileSync(join(dir, 'progs', 'bad.bpf.c'), program)
  return dir
}

const BROKEN = '#include <linux/bpf.h>\nint prog(struct __sk_buff *skb)\n{\n\treturn skb->len +;\n}\n'

t.test("a compile error fails the build with clang's message", async (t) => {
  const dir = tempTree(t, BROKEN)
  await t.rejects(buildBpf(dir, join(dir, 'out')), {
    code: 'EBPFBUILD',
    message: /clang failed on .*progs\/bad\.bpf\.c:\n.*bad\.bpf\.c:4:\d+: error: expected expression/,
  })
  const cli = spawnSync(
    process.execPath,
    [distPath('redirect-bpf/build.js'), '--src', dir, '--out', join(dir, 'out')],
    { encoding: 'utf8' },
  )
  t.equal(cli.status, 1, 'the build command exits 1')
  t.match(cli.stderr, /bad\.bpf\.c:4:\d+: error: expected expression/)
})

t.test('warnings are errors: BPF C is held to -Wall -Werror', async (t) => {
  const dir = tempTree(t, '#include <linux/bpf.h>\nint prog(struct __sk_buff *skb)\n{\n\tint unused;\n\treturn 0;\n}\n')
  await t.rejects(buildBpf(dir, join(dir, 'out')), { message: /unused variable 'unused'/ })
})

kernelTest(t, 'the kernel verifier accepts every built program', async (t) => {
  for (const src of findBpfSources(srcDir)) {
    const obj = distPath(join('redirect-bpf', relative(srcDir, src).replace(/\.c$/, '.o')))
    // A private mount namespace with its own bpffs: the maps' pins and the programs vanish
    // with it, so nothing outlives the check.
    const script =
      'mount -t bpf bpf /sys/fs/bpf && bpftool prog loadall "$0" /sys/fs/bpf/progs && for p in /sys/fs/bpf/progs/*; do bpftool prog show pinned "$p"; done'
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, obj], {
      encoding: 'utf8',
      timeout: 30_000,
    })
    t.equal(r.status, 0, `${relative(projectRoot(), obj)} loads: ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`)
    if (src.endsWith('from-endpoint.bpf.c'))
      t.match(r.stdout, /sched_cls\s+name from_endpoint/, 'loaded as a TC classifier')
  }
})

kernelTest(t, 'a program the verifier rejects fails to load with the verifier log attached', async (t) => {
  const dir = tempTree(
    t,
    [
      '#include <linux/bpf.h>',
      '#include <bpf/bpf_helpers.h>',
      'SEC("tc")',
      'int reads_past_the_packet(struct __sk_buff *skb)',
      '{',
      '\tunsigned char *data = (unsigned char *)(long)skb->data;',
      '\treturn data[64]; /* no bounds check against data_end */',
      '}',
      'char LICENSE[] SEC("license") = "GPL";',
      '',
    ].join('\n'),
  )
  const { objects } = await buildBpf(dir, join(dir, 'out'))
  const { BpfObject } = await import('../redirect-bpf/bpf-object.js')
  const pinRoot = useBpffs(t, `verifier${process.pid}`)
  let err: { code?: string; message?: string; verifierLog?: string } = {}
  try {
    BpfObject.load(objects[0]!, pinRoot).close()
  } catch (e) {
    err = e as typeof err
  }
  t.equal(err.code, 'ELOAD', 'a load error')
  t.match(err.verifierLog, /invalid access to packet|R\d+ invalid mem access/, 'carrying the verifier log')
  t.match(
    err.message,
    /cannot load BPF object .*bad\.bpf\.o: (EACCES|EINVAL)[\s\S]*verifier log:/,
    'which the message shows',
  )
})
