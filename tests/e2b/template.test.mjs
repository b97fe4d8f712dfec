// Template SDK scenarios (issue 13): the official `e2b` SDK's Template
// builder, unmodified, against hearth. Run by tests/e2b/run.sh.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BuildError, Sandbox, Template, waitForPort } from 'e2b'

const T = { timeout: 600_000 } // builds boot VMs under TCG
const RUN = randomUUID().slice(0, 8)
const created = new Set()
after(async () => {
  await Promise.allSettled([...created].map((id) => Sandbox.kill(id)))
})

function context() {
  const dir = mkdtempSync(join(tmpdir(), 'hearth-tpl-'))
  writeFileSync(join(dir, 'index.html'), 'from the context\n')
  return dir
}

function serving(dir) {
  return Template({ fileContextPath: dir })
    .fromTemplate('base')
    .setEnvs({ GREETING: 'hello' })
    .copy('index.html', '/srv/index.html')
    .runCmd('echo "$GREETING from RUN" > /srv/run.txt')
    .setWorkdir('/srv')
    .setStartCmd('python3 -m http.server 8000', waitForPort(8000))
}

const fetchCmd = (path) =>
  `python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/${path}').read().decode(), end='')"`

test('Template.build, then Sandbox.create(name) is already serving', T, async () => {
  const name = `web-${RUN}`
  const logs = []
  const info = await Template.build(serving(context()), `${name}:v1`, { cpuCount: 1, memoryMB: 512, onBuildLogs: (l) => logs.push(l.message) })
  assert.equal(info.name, `${name}:v1`)
  assert.ok(logs.some((m) => m.includes('from RUN')), `build logs show the RUN step:\n${logs.join('\n')}`)
  assert.ok(await Template.exists(name))
  assert.equal(await Template.exists(`nope-${RUN}`), false)

  for (const ref of [name, `${name}:v1`]) {
    const sbx = await Sandbox.create(ref, { timeoutMs: 300_000 })
    created.add(sbx.sandboxId)
    // No wait: the start command was frozen serving.
    const r = await sbx.commands.run(`${fetchCmd('run.txt')}; ${fetchCmd('index.html')}`)
    assert.equal(r.stdout, 'hello from RUN\nfrom the context\n')
    const env = await sbx.commands.run('echo $GREETING')
    assert.equal(env.stdout, 'hello\n')
    await sbx.kill()
    created.delete(sbx.sandboxId)
  }

  // An unchanged rebuild comes from the cache.
  const again = []
  await Template.build(serving(context()), name, { cpuCount: 1, memoryMB: 512, onBuildLogs: (l) => again.push(l.message) })
  assert.ok(again.some((m) => m.startsWith('CACHED RUN')), `rebuild reuses the RUN step:\n${again.join('\n')}`)
})

test('minFreeDiskMb is baked into the template: df / in its sandboxes', T, async () => {
  const name = `disk-${RUN}`
  await Template.build(Template().fromTemplate('tiny').runCmd('echo hi > /tmp/hi'), name, { cpuCount: 1, memoryMB: 256, minFreeDiskMb: 1500 })
  const sbx = await Sandbox.create(name, { timeoutMs: 120_000 })
  created.add(sbx.sandboxId)
  const r = await sbx.commands.run('df -B1 / | tail -1')
  const [, size, , avail] = r.stdout.trim().split(/\s+/).map(Number)
  // The built file system plus 1500 MiB, not the 20 GiB default.
  assert.ok(avail >= 1400 * 2 ** 20 && size < 4096 * 2 ** 20, `df /: ${r.stdout}`)
  await sbx.kill()
  created.delete(sbx.sandboxId)
})

test('buildInBackground + getBuildStatus, tags, and a failing step', T, async () => {
  const name = `bg-${RUN}`
  const tpl = Template().fromTemplate('tiny').runCmd('echo built > /built.txt')
  const b = await Template.buildInBackground(tpl, name, { cpuCount: 1, memoryMB: 256 })
  let status
  for (let i = 0; i < 600; i++) {
    status = await Template.getBuildStatus(b)
    if (status.status !== 'building' && status.status !== 'waiting') break
    await new Promise((r) => setTimeout(r, 500))
  }
  assert.equal(status.status, 'ready', JSON.stringify(status))

  await Template.assignTags(name, ['stable'])
  const tags = await Template.getTags(b.templateId)
  assert.deepEqual(tags.map((t) => t.tag), ['stable'])
  const sbx = await Sandbox.create(`${name}:stable`, { timeoutMs: 120_000 })
  created.add(sbx.sandboxId)
  assert.equal((await sbx.commands.run('cat /built.txt')).stdout, 'built\n')

  const failing = Template().fromTemplate('tiny').runCmd('echo boom; exit 3')
  await assert.rejects(Template.build(failing, `fail-${RUN}`, { cpuCount: 1, memoryMB: 256 }), (err) => {
    assert.ok(err instanceof BuildError, String(err))
    assert.match(err.message, /exit code 3/)
    assert.match(err.message, /boom/)
    return true
  })
})
