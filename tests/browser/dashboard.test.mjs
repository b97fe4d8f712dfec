// Browser tests of the dashboard: Debian's Chromium driven by playwright-core
// (no browser download). tests/browser/run.sh starts a server and sets:
//   HEARTH_URL             base URL of a server that serves the dashboard
//   HEARTH_ADMIN_EMAIL     a platform admin (hearth dev's developer account)
//   HEARTH_ADMIN_PASSWORD
//   CHROMIUM               browser binary (default /usr/bin/chromium)
//   SCREENSHOT_DIR         where page screenshots go (default ./screenshots)
// Timeouts below are safety nets for slow VM boots, not speed assertions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const SERVER = process.env.HEARTH_URL;
// The dashboard lives under /app/ (the E2B-compatible API owns /sandboxes
// and /templates at the root); BASE is the app, SERVER the whole server.
const BASE = SERVER && `${SERVER.replace(/\/$/, '')}/app`;
const ADMIN_EMAIL = process.env.HEARTH_ADMIN_EMAIL;
const ADMIN_PASSWORD = process.env.HEARTH_ADMIN_PASSWORD;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR || path.join(import.meta.dirname, 'screenshots');
const VM_TIMEOUT = 180_000;

if (!SERVER) throw new Error('HEARTH_URL is not set: run tests/browser/run.sh');

const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };

const contexts = [];
const dirs = [];

// browserContext starts Chromium with a fresh profile directory.
async function browserContext(viewport = DESKTOP) {
  const dir = mkdtempSync(path.join(tmpdir(), 'hearth-chromium-'));
  dirs.push(dir);
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    acceptDownloads: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  contexts.push(ctx);
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(30_000);
  return { ctx, page };
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function noHorizontalScroll(page, what) {
  const { sw, iw } = await page.evaluate(() => ({ sw: document.documentElement.scrollWidth, iw: window.innerWidth }));
  assert.ok(sw <= iw, `${what}: page is ${sw}px wide in a ${iw}px viewport (horizontal scroll)`);
}

// terminalLines returns the terminal's rendered rows (xterm's DOM renderer).
async function terminalLines(page) {
  return page.$$eval('[data-testid=terminal] .xterm-rows > div', (rows) => rows.map((r) => r.textContent.replace(/\u00a0/g, ' ').trimEnd()));
}

async function statusOf(page) {
  return page.locator('.page-header [data-status]').first().getAttribute('data-status');
}

before(() => {
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('dashboard: signup, keys, sandbox, terminal, files, pause/resume, snapshot, admin, destroy', { timeout: 15 * 60_000 }, async (t) => {
  const { page } = await browserContext();
  const email = `user-${randomBytes(4).toString('hex')}@example.com`;
  const password = 'correct horse battery';
  let sandboxId;
  const snapName = `snap-${randomBytes(3).toString('hex')}`;
  let snapshotCreated = false;
  let apiKeyValue;

  await t.test('signup logs the new user in', async () => {
    await page.goto(`${BASE}/sandboxes`);
    await page.waitForURL(/\/app\/login/);
    await shot(page, 'login');
    await page.getByRole('link', { name: 'Create an account' }).click();
    await page.waitForURL(/\/app\/signup/);
    await page.fill('input[name=email]', email);
    await page.fill('input[name=password]', password);
    await shot(page, 'signup');
    await page.getByRole('button', { name: 'Sign up' }).click();
    await page.waitForURL(/\/app\/sandboxes$/);
    await page.getByTestId('user-email').filter({ hasText: email }).waitFor();
    // The session token is httpOnly: page scripts cannot read it.
    const cookies = await page.evaluate(() => document.cookie);
    assert.ok(cookies.includes('hearth_csrf='), 'CSRF cookie readable');
    assert.ok(!cookies.includes('hearth_session='), `session cookie must be httpOnly, page sees: ${cookies}`);
    await page.getByText('No sandboxes yet').waitFor();
    await shot(page, 'sandboxes-empty');
  });

  await t.test('create an API key: shown once, then listed by prefix', async () => {
    await page.getByRole('link', { name: 'API keys' }).first().click();
    await page.waitForURL(/\/app\/keys$/);
    await page.fill('input[name=key-name]', 'browser-test');
    await page.getByTestId('create-key').click();
    const key = (await page.getByTestId('new-key-value').textContent()).trim();
    assert.match(key, /^e2b_[0-9a-f]{40}$/);
    apiKeyValue = key;
    await page.locator('[data-testid=key-row][data-name=browser-test]').waitFor();
    await shot(page, 'api-keys');
    await page.reload();
    await page.locator('[data-testid=key-row][data-name=browser-test]').waitFor();
    assert.equal(await page.getByTestId('new-key-value').count(), 0, 'the key is not shown again');
    assert.ok(!(await page.content()).includes(key), 'the full key is never shown again');
  });

  await t.test('create a sandbox from the form', { timeout: VM_TIMEOUT + 30_000 }, async () => {
    await page.getByRole('link', { name: 'Sandboxes' }).first().click();
    await page.getByTestId('new-sandbox').click();
    const form = page.getByTestId('create-sandbox-form');
    await form.waitFor();
    const options = await form.locator('select[name=template] option').evaluateAll((os) => os.map((o) => ({ v: o.value, t: o.textContent })));
    const tiny = options.find((o) => o.t.startsWith('tiny '));
    if (tiny) await form.locator('select[name=template]').selectOption(tiny.v);
    await form.locator('input[name=vcpus]').fill('1');
    await form.locator('input[name=memory_mb]').fill('256');
    await form.locator('input[name=disk_gb]').fill('2');
    await shot(page, 'sandbox-create');
    await page.getByTestId('create-sandbox').click();
    await page.waitForURL(/\/app\/sandboxes\/[a-z0-9]+$/, { timeout: VM_TIMEOUT });
    sandboxId = page.url().split('/').pop();
    assert.equal(await statusOf(page), 'running');
    const facts = await page.locator('.facts').textContent();
    assert.ok(facts.includes('2 GB'), `disk size shown: ${facts}`);
    // The live Usage card reads CPU, memory and disk from envd in the guest.
    await page.locator('[data-testid=usage-card][data-state=ok]').waitFor({ timeout: 60_000 });
    const usage = await page.getByTestId('usage').evaluate((el) =>
      ['cpu', 'mem', 'disk'].map((k) => el.querySelector(`[data-testid=usage-${k}] .usage-value`).textContent),
    );
    assert.match(usage[0], /^\d+(\.\d+)?%$/, `CPU usage shown: ${usage}`);
    assert.match(usage[1], /^\d+(\.\d+)? [MG]B \/ \d+(\.\d+)? [MG]B$/, `memory usage shown: ${usage}`);
    assert.match(usage[2], /^\d+(\.\d+)? [MG]B \/ \d+(\.\d+)? [MG]B$/, `disk usage shown: ${usage}`);
  });

  await t.test('terminal: echo hello', { timeout: 120_000 }, async () => {
    await page.locator('[data-testid=terminal-state][data-phase=open]').waitFor({ timeout: 60_000 });
    await page.getByTestId('terminal').click();
    await page.keyboard.type('echo hello\n');
    // "hello" alone on a line is the command's output, not its echo.
    await page.waitForFunction(
      () =>
        Array.from(document.querySelectorAll('[data-testid=terminal] .xterm-rows > div')).some(
          (r) => r.textContent.replace(/\u00a0/g, ' ').trim() === 'hello',
        ),
      null,
      { timeout: 60_000 },
    );
    const lines = await terminalLines(page);
    assert.ok(lines.some((l) => l.includes('echo hello')), `command echoed: ${JSON.stringify(lines)}`);
    await shot(page, 'sandbox-terminal');
  });

  await t.test('files: upload, list, download', { timeout: 120_000 }, async () => {
    const browser = page.getByTestId('file-browser');
    await browser.getByLabel('Path').fill('/tmp');
    await browser.getByRole('button', { name: 'Go' }).click();
    await page.waitForFunction(() => document.querySelector('[data-testid=file-browser] input[aria-label=Path]').value === '/tmp');
    const name = `upload-${randomBytes(3).toString('hex')}.txt`;
    const content = `hello from the browser test ${randomBytes(8).toString('hex')}\n`;
    await page.getByTestId('upload-input').setInputFiles({ name, mimeType: 'text/plain', buffer: Buffer.from(content) });
    await page.getByTestId('files-notice').filter({ hasText: name }).waitFor();
    const row = page.locator(`[data-testid=file-row][data-name="${name}"]`);
    await row.waitFor();
    await row.scrollIntoViewIfNeeded();
    await shot(page, 'sandbox-files');
    const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('button', { name: 'Download' }).click()]);
    assert.equal(download.suggestedFilename(), name);
    const got = readFileSync(await download.path(), 'utf8');
    assert.equal(got, content, 'downloaded bytes equal the uploaded ones');
  });

  await t.test('snapshot the sandbox into a template', { timeout: VM_TIMEOUT }, async () => {
    await page.getByLabel('Snapshot name').fill(snapName);
    await page.getByRole('button', { name: 'Create snapshot' }).click();
    const ok = page.getByText(`Snapshot ${snapName} created.`);
    const err = page.locator('.card:has(h2:text("Snapshot")) .banner-error');
    await Promise.race([ok.waitFor({ timeout: VM_TIMEOUT }), err.waitFor({ timeout: VM_TIMEOUT })]);
    if (await err.count()) {
      const msg = await err.textContent();
      if (/not supported|not implemented|501/i.test(msg)) {
        t.skip(`snapshots not available on this server: ${msg}`);
        return;
      }
      assert.fail(`snapshot failed: ${msg}`);
    }
    snapshotCreated = true;
    await page.goto(`${BASE}/templates`);
    await page.locator(`[data-testid=snapshots-table] [data-name="${snapName}"]`).waitFor();
    await shot(page, 'templates');
    await page.goto(`${BASE}/sandboxes/${sandboxId}`);
  });

  await t.test('pause and resume', { timeout: 2 * VM_TIMEOUT }, async () => {
    await page.goto(`${BASE}/sandboxes/${sandboxId}`);
    const actions = page.locator('.page-header .page-actions');
    await page.locator('.page-header [data-status]').waitFor();
    if ((await statusOf(page)) === 'paused') {
      await actions.getByRole('button', { name: 'Resume' }).click();
      await page.locator('.page-header [data-status=running]').waitFor({ timeout: VM_TIMEOUT });
    }
    await actions.getByRole('button', { name: 'Pause' }).click();
    const paused = page.locator('.page-header [data-status=paused]');
    const err = actions.locator('.inline-error');
    await Promise.race([paused.waitFor({ timeout: VM_TIMEOUT }), err.waitFor({ timeout: VM_TIMEOUT })]);
    if (await err.count()) {
      const msg = await err.textContent();
      if (/not supported/i.test(msg)) {
        t.skip(`pause/resume not implemented on this server (HTTP 501): ${msg}`);
        return;
      }
      assert.fail(`pause failed: ${msg}`);
    }
    await page.getByText('The terminal is available while the sandbox is running').waitFor();
    await shot(page, 'sandbox-paused');
    await actions.getByRole('button', { name: 'Resume' }).click();
    await page.locator('.page-header [data-status=running]').waitFor({ timeout: VM_TIMEOUT });
    await page.locator('[data-testid=terminal-state][data-phase=open]').waitFor({ timeout: 60_000 });
  });

  await t.test('templates: a build started over the API shows its status and live log', { timeout: 2 * VM_TIMEOUT }, async (st) => {
    const name = `built-${randomBytes(3).toString('hex')}`;
    const res = await fetch(`${SERVER.replace(/\/$/, '')}/v1/templates/${name}/builds`, {
      method: 'POST',
      headers: { 'X-API-Key': apiKeyValue, 'Content-Type': 'application/json' },
      body: JSON.stringify({ dockerfile: 'FROM tiny\nRUN echo output-of-the-run-step\n', vcpus: 1, memory_mb: 256 }),
    });
    assert.equal(res.status, 202, await res.text());
    await page.goto(`${BASE}/templates`);
    const row = page.locator(`[data-testid=built-row][data-name=${name}]`);
    await row.waitFor();
    await row.getByRole('button', { name: 'Builds' }).click();
    const log = page.getByTestId('build-log');
    await log.filter({ hasText: /build ready|cannot build templates/ }).waitFor({ timeout: 2 * VM_TIMEOUT - 10_000 });
    if ((await log.textContent()).includes('cannot build templates')) {
      st.skip('this stack has no host that builds templates (devserver)');
      return;
    }
    assert.match(await log.textContent(), /output-of-the-run-step/);
    await page.locator('[data-testid=build-row] .tag-build-ready').first().waitFor();
    await shot(page, 'template-builds');
  });

  await t.test('list, templates, team pages; phone width has no horizontal scroll', async () => {
    await page.goto(`${BASE}/sandboxes`);
    await page.locator(`[data-testid=sandbox-row][data-id="${sandboxId}"]`).waitFor();
    await shot(page, 'sandboxes');
    await noHorizontalScroll(page, 'sandboxes (1280)');
    await page.goto(`${BASE}/team`);
    await page.getByTestId('teams-table').waitFor();
    await shot(page, 'team');
    if (!snapshotCreated) {
      await page.goto(`${BASE}/templates`);
      await page.getByTestId('templates-table').waitFor();
      await shot(page, 'templates');
    }

    await page.setViewportSize(PHONE);
    for (const [route, wait, name] of [
      ['/sandboxes', `[data-testid=sandbox-row][data-id="${sandboxId}"]`, 'phone-sandboxes'],
      [`/sandboxes/${sandboxId}`, '[data-testid=terminal]', 'phone-sandbox'],
      ['/keys', '[data-testid=keys-table]', 'phone-keys'],
      ['/templates', '[data-testid=templates-table]', 'phone-templates'],
    ]) {
      await page.goto(`${BASE}${route}`);
      await page.locator(wait).first().waitFor();
      await noHorizontalScroll(page, `${route} (390)`);
      await shot(page, name);
    }
    await page.getByRole('button', { name: 'Menu' }).click();
    await page.locator('.sidebar').getByRole('link', { name: 'Sandboxes' }).waitFor();
    // The drawer slides in: wait until it is fully open.
    await page.waitForFunction(() => document.querySelector('.sidebar').getBoundingClientRect().left === 0);
    await shot(page, 'phone-menu');
    await page.locator('.sidebar').getByRole('link', { name: 'Sandboxes' }).click();
    await page.setViewportSize(DESKTOP);
  });

  await t.test('team: add a second signed-up user and see them listed', async () => {
    // The second person signs up on their own (through the API, as a script would).
    const second = `teammate-${randomBytes(4).toString('hex')}@example.com`;
    const res = await fetch(`${SERVER.replace(/\/$/, '')}/v1/auth/signup`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: second, password: 'another good password' }),
    });
    assert.equal(res.status, 201, `signup of the second user: ${await res.text()}`);

    await page.goto(`${BASE}/team`);
    const table = page.getByTestId('members-table');
    await table.locator(`[data-testid=member-row][data-email="${email}"][data-role=owner]`).waitFor();
    // An unknown email is refused with the server's message, and the form stays usable.
    await page.fill('input[name=member-email]', `nobody-${randomBytes(3).toString('hex')}@example.com`);
    await page.getByTestId('add-member').click();
    await page.getByRole('alert').filter({ hasText: 'not found' }).waitFor();
    await page.getByRole('button', { name: 'Dismiss' }).click();

    await page.fill('input[name=member-email]', second);
    await page.getByTestId('add-member').click();
    const row = table.locator(`[data-testid=member-row][data-email="${second}"]`);
    await row.waitFor();
    assert.equal(await row.getAttribute('data-role'), 'member');
    await page.getByTestId('members-notice').filter({ hasText: second }).waitFor();
    // Promote them: the row shows the new role once the server confirms it.
    await row.getByRole('combobox').selectOption('admin');
    await table.locator(`[data-testid=member-row][data-email="${second}"][data-role=admin]`).waitFor();
    // Reloading shows what the server stored.
    await page.reload();
    await table.locator(`[data-testid=member-row][data-email="${second}"][data-role=admin]`).waitFor();
    await shot(page, 'team-members');

    await page.setViewportSize(PHONE);
    await page.goto(`${BASE}/team`);
    await table.locator(`[data-testid=member-row][data-email="${second}"]`).waitFor();
    await noHorizontalScroll(page, '/team (390)');
    await shot(page, 'phone-team');
    await page.setViewportSize(DESKTOP);
  });

  await t.test('a regular user is refused the admin templates page', async () => {
    await page.goto(`${BASE}/admin/templates`);
    await page.getByTestId('not-allowed').waitFor();
    assert.equal(await page.getByTestId('admin-templates-table').count(), 0);
    await shot(page, 'admin-templates-refused');
  });

  await t.test("an admin sees another team's template on the admin templates page", async () => {
    assert.ok(ADMIN_EMAIL && ADMIN_PASSWORD, 'HEARTH_ADMIN_EMAIL/HEARTH_ADMIN_PASSWORD are set by run.sh');
    const { page: admin } = await browserContext();
    // Typing the server's address lands on the app's login page.
    await admin.goto(`${SERVER}/`);
    await admin.waitForURL(/\/app\/login/);
    await admin.fill('input[name=email]', ADMIN_EMAIL);
    await admin.fill('input[name=password]', ADMIN_PASSWORD);
    await admin.getByRole('button', { name: 'Log in' }).click();
    await admin.waitForURL(/\/app\/sandboxes$/);
    await admin.getByRole('link', { name: 'All templates' }).click();
    const table = admin.getByTestId('admin-templates-table');
    await table.waitFor();
    if (snapshotCreated) {
      // The snapshot belongs to the regular user's team, not the admin's.
      const row = table.locator(`[data-name="${snapName}"]`);
      await row.waitFor();
      const me = await admin.evaluate(() => fetch('/v1/me').then((r) => r.json()));
      const rowText = await row.textContent();
      assert.ok(!rowText.includes(me.teams[0].id), 'the template is not the admin team’s');
    } else {
      t.diagnostic('no snapshot could be created, so only platform templates are checked');
      await table.locator('[data-name=base]').waitFor();
    }
    await shot(admin, 'admin-templates');
    await admin.getByRole('link', { name: 'Hosts' }).click();
    await admin.locator('.page-header h1', { hasText: 'Hosts' }).waitFor();
    await admin.locator('[data-testid=hosts-table], .empty').first().waitFor();
    await shot(admin, 'admin-hosts');
    await admin.getByRole('button', { name: 'Log out' }).click();
    await admin.waitForURL(/\/app\/login/);
    const me = await admin.evaluate(() => fetch('/v1/me').then((r) => r.status));
    assert.equal(me, 401, 'logged out: the API refuses the session');
  });

  await t.test('delete the snapshot', { timeout: VM_TIMEOUT }, async (st) => {
    if (!snapshotCreated) {
      st.skip('no snapshot was created');
      return;
    }
    await page.goto(`${BASE}/templates`);
    const row = page.locator(`[data-testid=snapshots-table] [data-name="${snapName}"]`);
    await row.getByRole('button', { name: 'Delete' }).click();
    await row.waitFor({ state: 'detached', timeout: VM_TIMEOUT });
  });

  await t.test('destroy the sandbox', { timeout: VM_TIMEOUT }, async () => {
    await page.goto(`${BASE}/sandboxes/${sandboxId}`);
    const actions = page.locator('.page-header .page-actions');
    await actions.getByRole('button', { name: 'Destroy' }).click();
    await actions.getByRole('button', { name: 'Confirm destroy' }).click();
    await page.waitForURL(/\/app\/sandboxes$/, { timeout: VM_TIMEOUT });
    await page.locator(`[data-testid=sandbox-row][data-id="${sandboxId}"]`).waitFor({ state: 'detached' });
    const status = await page.evaluate((id) => fetch(`/v1/sandboxes/${id}`).then((r) => r.status), sandboxId);
    assert.equal(status, 404, 'the destroyed sandbox is gone from the API');
  });
});
