// Every link in README.md and docs/ that points into the repository resolves: the file is there,
// and a #fragment names a heading of it (GitHub's anchors: lower case, punctuation dropped,
// spaces as hyphens). Links to other sites are left to the reader.

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import t from 'tap'
import { projectRoot } from '../lib/project-root.js'

const ROOT = projectRoot()
const DOCS = [
  join(ROOT, 'README.md'),
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(ROOT, 'docs', f)),
]

/** The anchor GitHub gives a heading. */
export function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-')
}

/** Links outside code spans and fences: [text](target). */
export function linksOf(markdown: string): string[] {
  const prose = markdown.replace(/```[\s\S]*?```/g, '').replace(/`[^`\n]*`/g, '')
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!)
}

function anchors(file: string): Set<string> {
  const text = readFileSync(file, 'utf8').replace(/```[\s\S]*?```/g, '')
  return new Set([...text.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => anchorOf(m[1]!)))
}

t.test('anchors and links are read as GitHub does', async (t) => {
  t.equal(
    anchorOf('gRPC: unary calls through the proxy, and against HAProxy'),
    'grpc-unary-calls-through-the-proxy-and-against-haproxy',
  )
  t.equal(
    anchorOf('toFQDNs at scale: first learnings of names that churn'),
    'tofqdns-at-scale-first-learnings-of-names-that-churn',
  )
  t.same(linksOf('see [a](docs/a.md) and `[b](no.md)` and [c](https://x.example/)\n```\n[d](no.md)\n```\n'), [
    'docs/a.md',
    'https://x.example/',
  ])
})

t.test('every link into the repository resolves', async (t) => {
  let checked = 0
  for (const doc of DOCS) {
    for (const link of linksOf(readFileSync(doc, 'utf8'))) {
      if (/^[a-z]+:/i.test(link)) continue
      const [path, fragment] = link.split('#') as [string, string | undefined]
      const target = path === '' ? doc : join(dirname(doc), path)
      const where = `${relative(ROOT, doc)}: ${link}`
      checked++
      if (!existsSync(target)) {
        t.fail(`${where}: no such file`)
        continue
      }
      if (fragment !== undefined && target.endsWith('.md') && !anchors(target).has(fragment))
        t.fail(`${where}: no heading with that anchor in ${relative(ROOT, target)}`)
    }
  }
  t.ok(checked > 0, `${checked} links checked`)
})
