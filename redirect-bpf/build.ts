// Compiles every redirect-bpf/**/*.bpf.c into dist/redirect-bpf/**/*.bpf.o with clang.
//   node dist/redirect-bpf/build.js [--src DIR] [--out DIR]
// A compile error fails the build with clang's own message. Objects are compiled in parallel,
// one per core.

import { execFile } from 'node:child_process'
import { mkdirSync, readdirSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { parseArgs } from 'node:util'
import { L7ProxyError } from '../lib/l7proxy-error.js'
import { projectRoot } from '../lib/project-root.js'

const MULTIARCH: Record<string, string> = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }
const TARGET_ARCH: Record<string, string> = { x64: 'x86', arm64: 'arm64' }

export class BpfBuildError extends L7ProxyError {
  constructor(message: string) {
    super('EBPFBUILD', message)
  }
}

export function findBpfSources(dir: string): string[] {
  const out: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...findBpfSources(p))
    else if (entry.name.endsWith('.bpf.c')) out.push(p)
  }
  return out.sort()
}

export function clangArgs(src: string, obj: string, includeDir: string): string[] {
  const arch = process.arch
  const multiarch = MULTIARCH[arch]
  if (!multiarch)
    throw new BpfBuildError(`unsupported architecture '${arch}' (supported: ${Object.keys(MULTIARCH).join(', ')})`)
  return [
    '-O2',
    '-g',
    '-Wall',
    '-Werror',
    '-target',
    'bpf',
    `-D__TARGET_ARCH_${TARGET_ARCH[arch]}`,
    '-I',
    includeDir,
    // <asm/types.h> lives in the multiarch directory, which -target bpf does not search.
    '-I',
    `/usr/include/${multiarch}`,
    '-c',
    src,
    '-o',
    obj,
  ]
}

function compile(src: string, obj: string, includeDir: string): Promise<void> {
  mkdirSync(dirname(obj), { recursive: true })
  return new Promise((resolve, reject) => {
    execFile('clang', clangArgs(src, obj, includeDir), { timeout: 120_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve()
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return reject(
          new BpfBuildError('clang not found: run scripts/setup.sh (Debian packages clang, llvm, libbpf-dev)'),
        )
      }
      reject(new BpfBuildError(`clang failed on ${src}:\n${stderr.trim() || err.message}`))
    })
  })
}

export interface BuildResult {
  objects: string[]
}

export async function buildBpf(srcDir: string, outDir: string): Promise<BuildResult> {
  const sources = findBpfSources(srcDir)
  const includeDir = join(srcDir, 'include')
  const jobs = sources.map((src) => ({ src, obj: join(outDir, relative(srcDir, src).replace(/\.c$/, '.o')) }))
  const errors: string[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++]!
      await compile(job.src, job.obj, includeDir).catch((e: Error) => errors.push(e.message))
    }
  }
  await Promise.all(Array.from({ length: Math.min(availableParallelism(), jobs.length) }, worker))
  if (errors.length > 0) throw new BpfBuildError(errors.join('\n\n'))
  return { objects: jobs.map((j) => j.obj) }
}

async function main(): Promise<void> {
  const root = projectRoot()
  const { values } = parseArgs({ options: { src: { type: 'string' }, out: { type: 'string' } } })
  const src = values.src ?? join(root, 'redirect-bpf')
  const out = values.out ?? join(root, 'dist', 'redirect-bpf')
  const { objects } = await buildBpf(src, out)
  process.stdout.write(`built ${objects.length} BPF object(s): ${objects.map((o) => relative(root, o)).join(', ')}\n`)
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: Error) => {
    process.stderr.write(`bpf build: ${err.message}\n`)
    process.exit(1)
  })
}
