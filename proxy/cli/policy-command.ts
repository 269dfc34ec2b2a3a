// `l7proxy policy validate FILE...` checks policy files offline, as the agent would load them;
// `policy get` shows what a lab's running agent enforces (every file's text and the revision);
// `policy import FILE...` validates the files, then has the agent write each into its policy
// directory and apply it at once (all or nothing at validation: one bad file imports none), or
// with --cluster store them in the cluster's store for every node; `policy remove --cluster`
// takes such a document out again.

import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import { PolicyError } from '../../policy/errors.js'
import { parsePolicyText } from '../../policy/parse.js'
import { adminGet } from '../agent/admin-socket.js'
import { noAgentOn, options } from './agent-query-command.js'
import { UsageError } from './usage-error.js'

export const POLICY_USAGE = `  policy validate FILE...    check policy files (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy,
                            NetworkPolicy); prints each problem as file:line:column, exit 1 if any
  policy get [--lab NAME | --socket PATH] [-o table|json]
                            the policy the lab's running agent enforces: revision, and every file's
                            text as YAML documents (json: { revision, directory, files: [{ file, text }] })
  policy import FILE... [--cluster] [--lab NAME | --socket PATH]
                            validate the files, then have the agent write each into its policy
                            directory (same name) and apply it at once; nothing is imported if
                            one is invalid. --cluster: into the cluster's store instead, named
                            after the file, applied by every node (policy get shows which
                            revision each node enforces)
  policy remove --cluster NAME... [--lab NAME | --socket PATH]
                            remove cluster policy documents (by the name import gave them)`

interface PolicyInForce {
  revision: number
  directory: string | null
  files: Array<{ file: string; text: string }>
  /** In a cluster: the store's policy revision this node has, and each node's. */
  cluster?: { revision: number; nodes: Array<{ node: string; revision: number }> }
}

/** Each file read and checked: its text, or the problems printed with `err`. */
function readValid(
  files: readonly string[],
  err: (s: string) => void,
): Array<{ file: string; text: string; rules: string[] }> | null {
  const ok: Array<{ file: string; text: string; rules: string[] }> = []
  let failed = false
  for (const file of files) {
    try {
      const text = readFileSync(file, 'utf8')
      ok.push({ file, text, rules: parsePolicyText(text, file).map((r) => r.id) })
    } catch (e) {
      if (e instanceof PolicyError) err(`${e.message}\n`)
      else if ((e as NodeJS.ErrnoException).code) err(`${file}: cannot read: ${(e as NodeJS.ErrnoException).code}\n`)
      else throw e
      failed = true
    }
  }
  return failed ? null : ok
}

/** Returns the exit code: 0 when everything went, 1 otherwise. */
export async function policyCommand(
  args: string[],
  out: (s: string) => void,
  err: (s: string) => void,
): Promise<number> {
  const [sub, ...rest] = args
  if (sub === undefined) throw new UsageError("'policy' needs a subcommand: validate, get, import or remove")
  if (sub === 'validate') {
    const unknown = rest.find((f) => f.startsWith('-'))
    if (unknown) throw new UsageError(`policy validate: unknown option '${unknown}'`)
    if (rest.length === 0) throw new UsageError('policy validate: give at least one FILE')
    let failed = 0
    for (const file of rest) {
      const v = readValid([file], err)
      if (v === null) failed++
      else
        out(
          `${file}: ok, ${v[0]!.rules.length} rule${v[0]!.rules.length === 1 ? '' : 's'} (${v[0]!.rules.join(', ') || 'no documents'})\n`,
        )
    }
    return failed > 0 ? 1 : 0
  }
  if (sub === 'get') {
    const { agent, json } = options('policy get', rest)
    const p = (await adminGet(agent.socket, '/v1/policy').catch(noAgentOn(agent))) as PolicyInForce
    if (json) out(`${JSON.stringify(p, null, 2)}\n`)
    else {
      out(`# policy revision ${p.revision}, ${p.files.length} file(s)${p.directory ? ` from ${p.directory}` : ''}\n`)
      if (p.cluster)
        out(
          `# cluster policy revision ${p.cluster.revision} here; by node: ${p.cluster.nodes.map((n) => `${n.node} ${n.revision}${n.revision === p.cluster!.revision ? '' : ' (behind or ahead)'}`).join(', ')}\n`,
        )
      for (const f of p.files)
        out(`---\n# ${f.file}\n${f.text.replace(/^---[^\n]*\n/, '')}${f.text.endsWith('\n') ? '' : '\n'}`)
    }
    return 0
  }
  if (sub === 'remove') {
    const { agent, files: names, flags } = options('policy remove', rest, { files: true, flags: ['cluster'] })
    if (!flags.has('cluster'))
      throw new UsageError(
        "policy remove: only cluster policy is removed this way (--cluster); a policy directory's files are removed by deleting them",
      )
    if (names.length === 0) throw new UsageError('policy remove --cluster: give at least one NAME')
    let missing = 0
    for (const name of names) {
      const r = (await adminGet(
        agent.socket,
        `/v1/policy/remove?name=${encodeURIComponent(name)}`,
        15_000,
        'POST',
      ).catch(noAgentOn(agent))) as { removed: boolean }
      if (!r.removed) missing++
      out(r.removed ? `${name}: removed from the cluster\n` : `${name}: no such cluster policy\n`)
    }
    return missing > 0 ? 1 : 0
  }
  if (sub === 'import') {
    const { agent, files, flags } = options('policy import', rest, { files: true, flags: ['cluster'] })
    if (files.length === 0) throw new UsageError('policy import: give at least one FILE')
    const valid = readValid(files, err)
    if (valid === null) {
      err('policy import: nothing imported\n')
      return 1
    }
    const names = valid.map((v) => basename(v.file))
    const twice = names.find((n, i) => names.indexOf(n) !== i)
    if (twice) throw new UsageError(`policy import: two files are named '${twice}' (the agent's directory holds one)`)
    for (const v of valid) {
      const name = encodeURIComponent(basename(v.file))
      if (flags.has('cluster')) {
        const r = (await adminGet(
          agent.socket,
          `/v1/policy/import?cluster=1&name=${name}`,
          15_000,
          'POST',
          v.text,
        ).catch(noAgentOn(agent))) as { revision: number }
        out(
          `${v.file}: stored in the cluster as ${basename(v.file)}, ${v.rules.length} rule(s); store revision ${r.revision}\n`,
        )
        continue
      }
      const r = (await adminGet(agent.socket, `/v1/policy/import?name=${name}`, 15_000, 'POST', v.text).catch(
        noAgentOn(agent),
      )) as { file: string; revision: number; applyMs: number }
      out(
        `${v.file}: imported as ${r.file}, ${v.rules.length} rule(s); policy revision ${r.revision} (applied in ${r.applyMs.toFixed(1)} ms)\n`,
      )
    }
    return 0
  }
  throw new UsageError(`unknown policy subcommand '${sub}' (expected validate, get, import or remove)`)
}
