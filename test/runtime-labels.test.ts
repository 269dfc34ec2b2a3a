// A container's labels as its runtime prints them (podman's `{{json .Config.Labels}}`), and the
// command that asks: a failure or a container not known yet is "not known yet".

import t from 'tap'
import { parseLabels, runtimeLabels } from '../proxy/agent/runtime-labels.js'

t.test('labels from what the runtime printed', async (t) => {
  t.same(parseLabels('{"app":"deathstar","org":"empire"}\n'), { app: 'deathstar', org: 'empire' })
  t.same(parseLabels('null\n'), {}, 'none: no labels, known')
  t.same(parseLabels('{}'), {})
  t.equal(parseLabels(''), null, 'nothing printed: not known')
  t.equal(parseLabels('["a"]'), null)
  t.equal(parseLabels('{"a":1}'), null, 'a label that is not a string: not taken')
})

t.test('the command gets the container id last; its failure is "not known yet"', async (t) => {
  t.same(await runtimeLabels(['sh', '-c', 'printf \'{"id":"%s"}\' "$0"'])('c0ffee'), { id: 'c0ffee' })
  t.equal(await runtimeLabels(['sh', '-c', 'exit 125'])('c0ffee'), null)
  t.equal(await runtimeLabels(['/nonexistent/podman'])('c0ffee'), null)
})
