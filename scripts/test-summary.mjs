#!/usr/bin/env node
// Reads a tap run's output (file argument or stdin) and prints its closing line as
// "N passed, N failed, N skipped". A second argument adds failed checks made outside tap (CI's
// own checks, such as leftovers after the run). Exits 1 if the run has failures, no closing summary, or ran
// no test at all, so a silent or empty run is never taken for a green one.
import { readFileSync } from 'node:fs'

const text = readFileSync(process.argv[2] ?? 0, 'utf8')
const lines = text.split('\n').filter((l) => /^# \{ total: \d+/.test(l))
const last = lines.at(-1)
if (!last) {
  console.log('0 passed, 1 failed')
  console.error('test-summary: no tap summary line found: the test run did not finish')
  process.exit(1)
}
const count = (key) => Number(new RegExp(`\\b${key}: (\\d+)`).exec(last)?.[1] ?? 0)
const passed = count('pass')
const failed = count('fail') + Number(process.argv[3] ?? 0)
const skipped = count('skip') + count('todo')
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
process.exit(failed > 0 || passed === 0 ? 1 : 0)
