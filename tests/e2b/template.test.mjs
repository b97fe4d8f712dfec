// Template SDK scenarios (issue 13): the official `e2b` SDK's Template
// builder, unmodified, against hearth. Run by tests/e2b/run.sh.
import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { spawn } from 'node:child_process'
import { lstatSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
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

// A private registry (HTTP basic auth) started here by tests/e2b/ociregistry
// (run.sh builds it; HEARTH_TEST_REGISTRY_BIN), holding the tiny image's
// root file system. It stops when its stdin closes.
async function privateRegistry() {
  const bin = process.env.HEARTH_TEST_REGISTRY_BIN
  const images = process.env.HEARTH_IMAGES_DIR
  assert.ok(bin && images, 'run by tests/e2b/run.sh (HEARTH_TEST_REGISTRY_BIN, HEARTH_IMAGES_DIR)')
  const proc = spawn(bin, [images], { stdio: ['pipe', 'pipe', 'inherit'] })
  after(() => proc.stdin.end())
  const lines = createInterface({ input: proc.stdout })
  const exited = new Promise((_, reject) => proc.on('exit', (code) => reject(new Error(`ociregistry exited with ${code}`))))
  const first = new Promise((resolve) => lines.once('line', resolve))
  return JSON.parse(await Promise.race([first, exited]))
}

// Files under dir (symlinks not followed) up to 64 MiB: what the server
// stored and logged, not guest disks.
function* smallFiles(dir) {
  const gone = (f) => { try { return f() } catch (err) { if (err.code === 'ENOENT') return null; throw err } }
  for (const e of gone(() => readdirSync(dir, { withFileTypes: true })) ?? []) {
    const p = join(dir, e.name)
    if (e.isDirectory()) yield* smallFiles(p)
    else if (e.isFile() && (gone(() => lstatSync(p))?.size ?? Infinity) <= 64 * 2 ** 20) yield p
  }
}

test('fromImage from a private registry: credentials, refused ones, setUser/setWorkdir, nothing leaked', T, async () => {
  const reg = await privateRegistry()
  const name = `private-${RUN}`
  const tpl = (password) =>
    Template()
      .fromImage(reg.image, { username: reg.username, password })
      .setWorkdir('/srv')
      .runCmd('echo private > /srv/p.txt')
      .setUser('user')

  // Refused credentials: the build request fails at once, naming the registry.
  await assert.rejects(Template.build(tpl('wrong'), name, { cpuCount: 1, memoryMB: 256 }), (err) => {
    assert.ok(err.message.includes(`registry ${reg.registry} refused the credentials`), String(err))
    return true
  })

  await Template.build(tpl(reg.password), name, { cpuCount: 1, memoryMB: 256 })
  const sbx = await Sandbox.create(name, { timeoutMs: 120_000 })
  created.add(sbx.sandboxId)
  // The template's last setUser and setWorkdir are its sandboxes' defaults.
  const r = await sbx.commands.run('whoami; pwd; cat p.txt')
  assert.equal(r.stdout, 'user\n/srv\nprivate\n')
  await sbx.kill()
  created.delete(sbx.sandboxId)

  // The password is in nothing the server stored or logged.
  const data = process.env.HEARTH_TEST_DATA_DIR
  assert.ok(data, 'run by tests/e2b/run.sh (HEARTH_TEST_DATA_DIR)')
  let stored = false
  for (const f of smallFiles(data)) {
    let b
    try { b = readFileSync(f) } catch { continue } // gone meanwhile
    assert.ok(!b.includes(reg.password), `${f} holds the registry password`)
    stored ||= b.includes(name)
  }
  assert.ok(stored, `no file under ${data} records the template: the check read nothing that matters`)
})
