// The product does not stand on the lab: no module of proxy/, policy/, redirect-bpf/, certs/ or
// lib/ imports lab/, bench/ or test/ statically. (The CLI loads the lab's and the benchmarks'
// commands with import() when they run: users of the product, not parts of it.)

import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import t from 'tap'
import { projectRoot } from '../lib/project-root.js'

const ROOT = projectRoot()
const PRODUCT = ['proxy', 'policy', 'redirect-bpf', 'certs', 'lib']
const USERS = ['lab', 'bench', 'test']

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : []
  })
}

/** The modules a source file imports statically (import ... from, export ... from, import '...'). */
export function staticImports(text: string): string[] {
  const found: string[] = []
  for (const m of text.matchAll(
    /^\s*(?:import|export)\b[^'"`()]*?from\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]/gm,
  ))
    found.push(m[1] ?? m[2]!)
  return found
}

t.test('static imports are found, dynamic ones are not', async (t) => {
  const text =
    "import a from './a.js'\nimport type { B } from '../b.js'\nexport { c } from './c.js'\nimport './side.js'\nimport {\n  d,\n  e,\n} from './de.js'\nconst f = await import('../../lab/lab.js')\n"
  t.same(staticImports(text), ['./a.js', '../b.js', './c.js', './side.js', './de.js'])
})

t.test(`no module of ${PRODUCT.join(', ')} imports ${USERS.join(', ')}`, async (t) => {
  const offending: string[] = []
  let files = 0
  for (const top of PRODUCT) {
    for (const file of sources(join(ROOT, top))) {
      files++
      for (const spec of staticImports(readFileSync(file, 'utf8'))) {
        if (!spec.startsWith('.')) continue
        const target = relative(ROOT, resolve(dirname(file), spec))
        if (USERS.some((u) => target === u || target.startsWith(`${u}/`)))
          offending.push(`${relative(ROOT, file)} imports ${spec}`)
      }
    }
  }
  t.ok(files > 50, `${files} product modules read`)
  t.same(offending, [], 'none reaches the lab, the benchmarks or the tests')
})
