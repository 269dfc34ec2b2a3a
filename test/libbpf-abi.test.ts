// The option-struct offsets redirect-bpf/libbpf.ts writes must be what the system's libbpf
// headers compile to: checked against a C program built here with sizeof/offsetof.

import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { OPEN_OPTS, PROG_INFO, TC_HOOK, TC_OPTS } from '../redirect-bpf/libbpf.js'

const C = `#include <stdio.h>
#include <stddef.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#define F(s, m) printf("%s.%s %zu\\n", #s, #m, offsetof(struct s, m))
int main(void) {
  printf("bpf_object_open_opts.size %zu\\n", sizeof(struct bpf_object_open_opts));
  F(bpf_object_open_opts, pin_root_path); F(bpf_object_open_opts, kernel_log_buf);
  F(bpf_object_open_opts, kernel_log_size); F(bpf_object_open_opts, kernel_log_level);
  printf("bpf_tc_hook.size %zu\\n", sizeof(struct bpf_tc_hook));
  F(bpf_tc_hook, ifindex); F(bpf_tc_hook, attach_point); F(bpf_tc_hook, parent);
  printf("bpf_tc_opts.size %zu\\n", sizeof(struct bpf_tc_opts));
  F(bpf_tc_opts, prog_fd); F(bpf_tc_opts, flags); F(bpf_tc_opts, prog_id); F(bpf_tc_opts, handle); F(bpf_tc_opts, priority);
  printf("bpf_prog_info.size %zu\\n", sizeof(struct bpf_prog_info));
  F(bpf_prog_info, name); F(bpf_prog_info, run_time_ns); F(bpf_prog_info, run_cnt);
  return 0;
}
`

t.test('libbpf option structs match the C layout', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'l7-abi-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'abi.c'), C)
  const cc = spawnSync('cc', ['-o', join(dir, 'abi'), join(dir, 'abi.c')], { encoding: 'utf8' })
  t.equal(cc.status, 0, `compiles: ${cc.stderr}`)
  const out = spawnSync(join(dir, 'abi'), { encoding: 'utf8' }).stdout
  const c = Object.fromEntries(
    out
      .trim()
      .split('\n')
      .map((l) => l.split(' '))
      .map(([k, v]) => [k, Number(v)]),
  )
  t.same(
    {
      size: OPEN_OPTS.size,
      pinRootPath: OPEN_OPTS.pinRootPath,
      kernelLogBuf: OPEN_OPTS.kernelLogBuf,
      kernelLogSize: OPEN_OPTS.kernelLogSize,
      kernelLogLevel: OPEN_OPTS.kernelLogLevel,
    },
    {
      size: c['bpf_object_open_opts.size'],
      pinRootPath: c['bpf_object_open_opts.pin_root_path'],
      kernelLogBuf: c['bpf_object_open_opts.kernel_log_buf'],
      kernelLogSize: c['bpf_object_open_opts.kernel_log_size'],
      kernelLogLevel: c['bpf_object_open_opts.kernel_log_level'],
    },
    'bpf_object_open_opts',
  )
  t.same(
    { ...TC_HOOK },
    {
      size: c['bpf_tc_hook.size'],
      ifindex: c['bpf_tc_hook.ifindex'],
      attachPoint: c['bpf_tc_hook.attach_point'],
      parent: c['bpf_tc_hook.parent'],
    },
    'bpf_tc_hook',
  )
  t.same(
    { ...TC_OPTS },
    {
      size: c['bpf_tc_opts.size'],
      progFd: c['bpf_tc_opts.prog_fd'],
      flags: c['bpf_tc_opts.flags'],
      progId: c['bpf_tc_opts.prog_id'],
      handle: c['bpf_tc_opts.handle'],
      priority: c['bpf_tc_opts.priority'],
    },
    'bpf_tc_opts',
  )
  t.ok(
    PROG_INFO.size <= c['bpf_prog_info.size']!,
    'bpf_prog_info: no larger than the headers say (the kernel takes a shorter one)',
  )
  t.same(
    { name: PROG_INFO.name, runTimeNs: PROG_INFO.runTimeNs, runCnt: PROG_INFO.runCnt },
    { name: c['bpf_prog_info.name'], runTimeNs: c['bpf_prog_info.run_time_ns'], runCnt: c['bpf_prog_info.run_cnt'] },
    'bpf_prog_info',
  )
})
