// @e2b/code-interpreter over HTTPS on a domain, as a hosted-E2B user runs
// it: only E2B_DOMAIN and E2B_API_KEY are set, so the SDK reaches the
// code-execution server at https://49999-<sandboxID>.<domain>. Run by
// tests/e2b/run.sh in its generations stage (test CA in
// NODE_EXTRA_CA_CERTS, resolve.cjs pointing the domain at hearth).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

const DOMAIN = process.env.E2B_DOMAIN
for (const v of ['E2B_DOMAIN', 'E2B_API_KEY', 'NODE_EXTRA_CA_CERTS']) {
  if (!process.env[v]) throw new Error(`${v} is not set: run tests/e2b/run.sh`)
}
for (const v of ['E2B_API_URL', 'E2B_SANDBOX_URL']) {
  if (process.env[v]) throw new Error(`${v} is set: this suite must reach hearth through E2B_DOMAIN alone`)
}
const TEMPLATE = 'code-interpreter-v1'
let sbx

// hearth dev bakes the template after it starts serving.
before(async () => {
  const deadline = Date.now() + 12 * 60_000
  for (;;) {
    const res = await fetch(`https://api.${DOMAIN}/templates`, { headers: { 'X-API-KEY': process.env.E2B_API_KEY } })
    const list = res.ok ? await res.json() : []
    if (list.some((t) => (t.aliases ?? []).includes(TEMPLATE))) return
    if (Date.now() > deadline) throw new Error(`template ${TEMPLATE} not listed after 12 minutes: see the hearth dev log`)
    await new Promise((r) => setTimeout(r, 1000))
  }
}, { timeout: 13 * 60_000 })

after(async () => {
  if (sbx) await sbx.kill()
})

test('runCode over https://49999-<id>.<domain>: state, a DataFrame, an error', { timeout: 300_000 }, async () => {
  sbx = await Sandbox.create({ timeoutMs: 600_000 })
  const first = await sbx.runCode('import pandas as pd\ndf = pd.DataFrame({"a": [1, 2, 3]})\ndf["a"].sum()')
  assert.equal(first.error, undefined)
  assert.equal(first.text, '6')
  const table = await sbx.runCode('df')
  assert.ok(table.results[0].html?.includes('<table'), 'a DataFrame comes back as html')
  const bad = await sbx.runCode('1/0')
  assert.equal(bad.error?.name, 'ZeroDivisionError')
  const again = await sbx.runCode('df["a"].max()')
  assert.equal(again.text, '3')
})
