import t from 'tap'
import { kernelGate } from './fixtures/kernel.js'

t.test('runs when nothing is missing', async (t) => {
  t.same(kernelGate(null, false), { run: true })
  t.same(kernelGate(null, true), { run: true })
})

t.test('skips with the reason when not required', async (t) => {
  t.same(kernelGate('the lab needs root', false), { run: false, skip: 'needs the kernel lab: the lab needs root' })
})

t.test('fails with the reason when L7PROXY_REQUIRE_KERNEL=1', async (t) => {
  const g = kernelGate('missing commands: unbound', true)
  t.equal(g.run, false)
  t.match(g, { fail: /kernel test cannot run: missing commands: unbound \(L7PROXY_REQUIRE_KERNEL=1\)/ })
})
