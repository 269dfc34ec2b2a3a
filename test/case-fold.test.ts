// Case-insensitive patterns for the linear-time engine (no `i` flag there): the cases spelled out
// must match exactly what V8's own `i` flag matches, on random patterns and strings.

import fc from 'fast-check'
import t from 'tap'
import { foldCase } from '../policy/case-fold.js'
import '../policy/regex.js' // enables the linear engine

t.test(
  'letters, escapes and classes are spelled out; group names, class escapes and quantifiers are not',
  async (t) => {
    t.equal(foldCase('a1.'), '[\\u0041\\u0061]1.')
    t.equal(foldCase('[a-c]'), '[\\u0041-\\u0043\\u0061-\\u0063]')
    t.equal(foldCase('[^x\\d]'), '[^\\d\\u0058\\u0078]')
    t.equal(foldCase('(?<Name>b){2,3}'), '(?<Name>[\\u0042\\u0062]){2,3}')
    t.equal(foldCase('\\x41\\w\\.'), '[\\u0041\\u0061]\\w\\.')
  },
)

t.test('the folded pattern on the linear engine matches what the i flag matches', async (t) => {
  const atom = fc.constantFrom(
    'a',
    'B',
    'k',
    'ß',
    'µ',
    'Σ',
    'σ',
    'ς',
    '1',
    '.',
    '\\w',
    '\\d',
    '[a-z]',
    '[^A-Z]',
    '[x-Ω]',
    '[_-c]',
    '\\x4b',
    '\\u00e9',
    '(?:ab|C)',
    '(s|T)',
    '[\\]a]',
    '\\.',
  )
  const quantifier = fc.constantFrom('', '', '*', '+', '?', '{1,2}')
  const pattern = fc
    .array(
      fc.tuple(atom, quantifier).map(([a, q]) => a + q),
      { minLength: 1, maxLength: 6 },
    )
    .map((p) => p.join(''))
  const text = fc
    .array(
      fc.constantFrom(
        'a',
        'A',
        'b',
        'B',
        'k',
        'K',
        '\u212a',
        'ß',
        'ẞ',
        'µ',
        'μ',
        'Μ',
        'σ',
        'Σ',
        'ς',
        's',
        'S',
        'ſ',
        '1',
        '_',
        '.',
        'é',
        'É',
        'c',
        'C',
        'x',
        'Ω',
        'ω',
        ']',
      ),
      { maxLength: 8 },
    )
    .map((c) => c.join(''))
  let checked = 0
  fc.assert(
    fc.property(pattern, text, (p, s) => {
      const want = new RegExp(`^(?:${p})$`, 'i').test(s)
      const got = new RegExp(`^(?:${foldCase(p)})$`, 'l').test(s)
      checked++
      return want === got
    }),
    { numRuns: 3000 },
  )
  t.equal(checked, 3000, 'pattern and string pairs agree')
})
