// End-to-end test of the web UI in headless Chromium against the real stack
// (started by scripts/ui-e2e.sh: backend-api with a required token, the
// resize, filter and ai-detect services on loopback). The steps share one
// browser page and run in order; each saves a screenshot, a failing one as
// failed-<step>.png.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';

const BASE = need('IMAGEFLOW_URL');
const TOKEN = need('IMAGEFLOW_TOKEN');
const PHOTO = need('IMAGEFLOW_PHOTO');
const OUT = need('IMAGEFLOW_ARTIFACTS');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is unset: run scripts/ui-e2e.sh`);
  return v;
}

let context;
let page;
let userDir;
const pageErrors = [];
/** The pipeline the round-trip steps share. */
let roundTripId;
const consoleErrors = [];

async function shot(name) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
}

/** Runs one step; on failure saves a screenshot and the page's HTML. */
function step(name, fn, timeout = 90_000) {
  it(name, { timeout }, async () => {
    try {
      await fn();
    } catch (e) {
      const slug = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
      await page.screenshot({ path: join(OUT, `failed-${slug}.png`), fullPage: true }).catch(() => {});
      writeFileSync(join(OUT, `failed-${slug}.html`), await page.content().catch(() => ''));
      throw e;
    }
  });
}

async function api(path) {
  const r = await fetch(BASE + path, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 200, `${path}: ${r.status}`);
  return r.json();
}

/** A write through the API (what a client other than the canvas does). */
async function apiSend(method, path, body) {
  const r = await fetch(BASE + path, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

/** A stored pipeline less what changes on every save. */
function definitionPart(stored) {
  const { revision: _r, updatedAt: _u, ...rest } = stored;
  return rest;
}

/** The centre of an element in page coordinates. */
async function centre(locator) {
  const box = await locator.boundingBox();
  assert.ok(box, 'element has no box (not visible?)');
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
}

/** A real pointer drag: press, move in steps, release. */
async function drag(from, to) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move((from.x + to.x) / 2, (from.y + to.y) / 2, { steps: 8 });
  await page.mouse.move(to.x, to.y, { steps: 8 });
  await page.mouse.up();
}

const node = (stepId) => page.locator(`.node[data-step-id="${stepId}"]`);

/** Drags from one step's output port onto another step. */
async function connect(from, to) {
  await drag(await centre(node(from).locator('.port.out')), await centre(node(to)));
  // An SVG group has no box of its own for Playwright: wait for it in the DOM.
  await page.locator(`[data-edge="${from}->${to}"]`).waitFor({ state: 'attached' });
}

describe('ImageFlowCanvas web UI', () => {
  before(async () => {
    userDir = mkdtempSync(join(tmpdir(), 'imageflow-chromium-'));
    context = await chromium.launchPersistentContext(userDir, {
      executablePath: CHROMIUM,
      headless: true,
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
      viewport: { width: 1280, height: 900 },
      acceptDownloads: true,
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
  });

  after(async () => {
    await context?.close();
    if (userDir) rmSync(userDir, { recursive: true, force: true });
  });

  step('asks for the API token the backend requires', async () => {
    await page.goto(BASE + '/');
    const dialog = page.getByRole('dialog', { name: 'API token' });
    await dialog.waitFor();
    assert.match(await dialog.textContent(), /bearer token/);
    await shot('01-token');
    await page.getByLabel('Token', { exact: true }).fill(TOKEN);
    await page.getByRole('button', { name: 'Use token' }).click();
    await page.getByRole('button', { name: 'Add a resize step' }).waitFor();
    assert.equal(await dialog.isVisible(), false);
    // The empty state, before anything is on the canvas.
    await page.getByText('The canvas is empty.').waitFor();
  });

  step('builds resize → ai_detection → filter by clicking and dragging', async () => {
    await page.getByRole('button', { name: 'Add a resize step' }).click();
    await page.getByRole('button', { name: 'Add a ai_detection step' }).click();
    // The filter is dragged from the palette onto a free spot of the canvas.
    const board = await page.locator('.board').boundingBox();
    await drag(await centre(page.locator('.palette-item[data-component="filter"]')), {
      x: board.x + 330,
      y: board.y + 300,
    });
    await node('filter').waitFor();
    assert.deepEqual(
      await page.locator('.node').evaluateAll((els) => els.map((e) => e.dataset.stepId)),
      ['resize', 'detect', 'filter'],
    );
    // Moving a node with the pointer.
    const before = await node('filter').boundingBox();
    const head = await centre(node('filter').locator('.node-head'));
    await drag(head, { x: head.x + 260, y: head.y - 110 });
    const moved = await node('filter').boundingBox();
    assert.ok(Math.abs(moved.x - (before.x + 260)) < 3 && Math.abs(moved.y - (before.y - 110)) < 3, 'node moved');

    await connect('resize', 'detect');
    await connect('detect', 'filter');
    assert.equal(await page.locator('.edge').count(), 2);

    // Parameter forms come from the registry, defaults filled in.
    await node('resize').click();
    const width = page.getByLabel('width', { exact: true });
    assert.equal(await width.inputValue(), '800');
    assert.equal(await page.getByLabel('height', { exact: true }).inputValue(), '600');
    await width.fill('640');
    await page.getByLabel('height', { exact: true }).fill('480');
    await node('detect').click();
    assert.equal(await page.getByLabel('confidence_threshold').inputValue(), '0.5');
    assert.equal(await page.getByLabel('model_name').inputValue(), 'yolo');
    // A client-side range check, then a valid value.
    await page.getByLabel('confidence_threshold').fill('1.5');
    await page.locator('[data-param="confidence_threshold"] .field-error').waitFor();
    await page.getByLabel('confidence_threshold').fill('0.4');
    assert.equal(await page.locator('.field-error').count(), 0);
    await node('filter').click();
    await page.getByLabel('filter_type').selectOption('sharpen');
    // The keyboard alternative to dragging lists the dependency.
    assert.match(await page.locator('.deps').textContent(), /detect/);

    await page.getByLabel('Pipeline name').fill('e2e astronaut pipeline');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await page.locator('[data-save-state="saved"]').waitFor();
    assert.match(await page.locator('.save-state').textContent(), /revision 1/);
    const { pipelines } = await api('/v1/pipelines');
    const saved = pipelines.find((p) => p.pipelineName === 'e2e astronaut pipeline');
    assert.deepEqual(
      saved.steps.map((s) => [s.stepId, s.componentName, s.dependencies]),
      [
        ['resize', 'resize', []],
        ['detect', 'ai_detection', ['resize']],
        ['filter', 'filter', ['detect']],
      ],
    );
    assert.equal(saved.steps[0].parameters.width, 640);
    assert.equal(saved.steps[1].parameters.confidence_threshold, 0.4);
    assert.equal(saved.steps[2].parameters.filter_type, 'sharpen');
    await shot('02-canvas-built');
  });

  step('runs it on the astronaut photo, watching every node complete live', async () => {
    // Drag and drop of a file onto the drop zone.
    const b64 = readFileSync(PHOTO).toString('base64');
    const transfer = await page.evaluateHandle((data) => {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'astronaut.jpg', { type: 'image/jpeg' }));
      return dt;
    }, b64);
    await page.dispatchEvent('[data-dropzone="images"]', 'drop', { dataTransfer: transfer });
    const card = page.locator('.file-card[data-file="astronaut.jpg"]');
    await card.waitFor();
    assert.equal(await card.locator('input[type=checkbox]').isChecked(), true);

    // Record every status each node shows, to see the live transitions.
    await page.evaluate(() => {
      window.__seen = {};
      new MutationObserver((records) => {
        for (const r of records) {
          const el = r.target;
          if (el.dataset?.stepId) (window.__seen[el.dataset.stepId] ??= []).push(el.dataset.status);
        }
      }).observe(document.querySelector('.board'), { attributes: true, subtree: true, attributeFilter: ['data-status'] });
    });
    await page.getByRole('button', { name: 'Run on 1 image' }).click();
    await page.locator('.watched[data-execution-status="completed"]').waitFor({ timeout: 60_000 });
    for (const id of ['resize', 'detect', 'filter']) {
      assert.equal(await node(id).getAttribute('data-status'), 'completed', `${id} completed`);
      assert.match(await node(id).locator('[data-time]').textContent(), /\d+(\.\d+)? (ms|s)/, `${id} shows its time`);
    }
    const seen = await page.evaluate(() => window.__seen);
    assert.ok(seen.detect?.includes('running') || seen.detect?.includes('pending'), `live states: ${JSON.stringify(seen)}`);

    // The person box, drawn from the returned detections on the image the detector saw.
    const box = page.locator('.watched [data-result="detect-detections"] rect.det-box[data-class="person"]');
    await box.first().waitFor();
    const geometry = await box.first().evaluate((r) => ({
      x: Number(r.getAttribute('x')),
      y: Number(r.getAttribute('y')),
      w: Number(r.getAttribute('width')),
      h: Number(r.getAttribute('height')),
      view: r.ownerSVGElement.getAttribute('viewBox'),
    }));
    const [, , vw, vh] = geometry.view.split(' ').map(Number);
    assert.equal(vw, 480, 'boxes are in the resized image (480x480)');
    assert.ok(geometry.x >= 0 && geometry.y >= 0 && geometry.x + geometry.w <= vw + 1 && geometry.y + geometry.h <= vh + 1);
    assert.ok(geometry.w * geometry.h > 0.1 * vw * vh, 'the astronaut fills a good part of the photo');
    assert.match(await page.locator('.watched .detections').first().textContent(), /person/);
    // The image under the boxes actually loaded.
    await page.waitForFunction(() => {
      const img = document.querySelector('.watched [data-result="detect-detections"] img');
      return img && img.complete && img.naturalWidth === 480;
    });
    await shot('03-canvas-run');
  });

  step('refuses a cycle with the API message on the node', async () => {
    await connect('filter', 'resize');
    await page.getByRole('button', { name: 'Save revision' }).click();
    const error = page.locator('.node .node-error');
    await error.waitFor();
    const text = await error.textContent();
    assert.match(text, /cycle in dependencies: .*->/);
    const at = await error.evaluate((e) => e.closest('.node').dataset.stepId);
    assert.ok(['resize', 'detect', 'filter'].includes(at));
    assert.match(await page.locator('[data-banner="error"]').textContent(), new RegExp(`step ${at}`));
    assert.match(await page.locator('.save-state').textContent(), /Unsaved changes · revision 1/);
    await shot('04-canvas-cycle');

    // Removed from the keyboard: focus the edge, press Delete; then it saves.
    await page.locator('[data-edge="filter->resize"]').focus();
    await page.keyboard.press('Delete');
    assert.equal(await page.locator('[data-edge="filter->resize"]').count(), 0);
    assert.equal(await page.locator('.node-error').count(), 0);
    // A parameter only the server can judge: its message lands on the step too.
    await node('resize').click();
    await page.getByLabel('width', { exact: true }).fill('0');
    await page.getByLabel('height', { exact: true }).fill('0');
    await page.getByRole('button', { name: 'Save revision' }).click();
    await node('resize').locator('.node-error', { hasText: 'both 0' }).waitFor();
    await shot('04b-canvas-bad-parameter');
    await page.getByLabel('width', { exact: true }).fill('640');
    await page.getByLabel('height', { exact: true }).fill('480');
    assert.equal(await page.locator('.node-error').count(), 0);

    await page.getByRole('button', { name: 'Save revision' }).click();
    await page.locator('[data-save-state="saved"]').waitFor();
    assert.match(await page.locator('.save-state').textContent(), /revision 2/);
    // Older revisions stay readable.
    assert.deepEqual(
      await page.locator('#pipeline-revision option').evaluateAll((o) => o.map((x) => x.value)),
      ['2', '1'],
    );
  });

  step('lists executions with filters', async () => {
    await page.getByRole('link', { name: 'Executions' }).click();
    const row = page.locator('tr[data-status="completed"]');
    await row.first().waitFor();
    assert.match(await row.first().textContent(), /e2e astronaut pipeline/);
    // The page marks what its rows were loaded for, so each check reads the list of the filter
    // just chosen, never the previous one's rows or the loading state in between.
    await page.getByLabel('Status').selectOption('failed');
    await page.locator('[data-empty][data-loaded-status="failed"]').waitFor();
    assert.match(await page.locator('[data-empty]').textContent(), /No executions match these filters\./);
    await page.getByLabel('Status').selectOption('completed');
    await page.locator('.table-wrap[data-loaded-status="completed"][data-loaded-pipeline=""]').waitFor();
    const [pipelineId] = await page.getByLabel('Pipeline').selectOption({ label: 'e2e astronaut pipeline' });
    assert.ok(pipelineId, 'the pipeline filter lists the saved pipeline');
    await page
      .locator(`.table-wrap[data-loaded-status="completed"][data-loaded-pipeline="${pipelineId}"]`)
      .waitFor();
    assert.equal(await page.locator('tbody tr').count(), 1);
    assert.match(await row.first().textContent(), /e2e astronaut pipeline/);
    await shot('05-executions');
  });

  step('shows the execution: Gantt of the levels, trace link, outputs', async () => {
    await page.locator('tr[data-status="completed"] a').first().click();
    await page.locator('[data-execution-status="completed"]').waitFor();
    const id = await page.locator('[data-execution]').first().getAttribute('data-execution');
    const record = await api(`/v1/executions/${id}`);
    assert.equal(await page.locator('.gantt-row').count(), 3);
    assert.equal(await page.locator('table.steps tr[data-status="completed"]').count(), 3);
    if (record.trace_id) {
      assert.equal(
        await page.locator('[data-trace] a').getAttribute('href'),
        `http://127.0.0.1:16686/trace/${record.trace_id}`,
      );
    } else {
      await page.getByText('no trace id recorded').waitFor();
    }
    await page.locator('rect.det-box[data-class="person"]').first().waitFor();
    // Downloading a result gives the image's bytes.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.locator('[data-result="filter"] button', { hasText: 'Download' }).click(),
    ]);
    const saved = join(OUT, 'downloaded-filter-output.jpg');
    await download.saveAs(saved);
    assert.ok(statSync(saved).size > 1000);
    assert.match(download.suggestedFilename(), /filter\.jpg$/);
    await shot('06-execution');
  });

  step('dashboard: rate, success, p95 and service health', async () => {
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.locator('[data-tile="success"] .tile-value', { hasText: '100 %' }).waitFor();
    assert.notEqual(await page.locator('[data-tile="p95"] .tile-value').textContent(), '–');
    assert.notEqual(await page.locator('[data-tile="rate"] .tile-value').textContent(), '0.00');
    for (const check of ['database', 'storage', 'service:resize', 'service:filter', 'service:ai_detection']) {
      await page.locator(`[data-check="${check}"][data-ok="yes"]`).waitFor();
    }
    await page.locator('[data-tile="replica-total"] .tile-value', { hasText: '1' }).waitFor();
    await shot('07-dashboard');
  });

  step('keyboard and screen-reader basics', async () => {
    await page.getByRole('link', { name: 'Canvas' }).click();
    // The canvas re-renders its nodes once the stored pipeline has loaded, which can
    // take the focus from a node focused just before: focus and press again then.
    for (let attempt = 1; ; attempt++) {
      await node('detect').focus();
      await page.keyboard.press('Enter');
      try {
        await page.locator('[data-inspector="detect"]').waitFor({ timeout: 3000 });
        break;
      } catch (err) {
        if (attempt === 4) throw err;
      }
    }
    const unlabelled = await page.$$eval('input, select, textarea', (els) =>
      els
        .filter((e) => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map((e) => e.outerHTML),
    );
    assert.deepEqual(unlabelled, []);
    // Arrow keys move the focused node (focus it again: Enter opened the
    // inspector), once the move has rendered.
    await node('detect').focus();
    const before = await node('detect').boundingBox();
    await page.keyboard.press('ArrowDown');
    let after = await node('detect').boundingBox();
    for (let i = 0; i < 40 && Math.abs(after.y - before.y - 10) >= 2; i++) {
      await page.waitForTimeout(50);
      after = await node('detect').boundingBox();
    }
    assert.ok(Math.abs(after.y - before.y - 10) < 2, `the node moved ${after.y - before.y}px, not 10`);
    // The first Tab reaches the skip link.
    await page.goto(BASE + '/#/executions');
    await page.reload();
    await page.locator('main h1').waitFor();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
  });

  step('works at tablet width', async () => {
    await page.setViewportSize({ width: 820, height: 1180 });
    for (const [hash, name] of [
      ['#/', '08-canvas-tablet'],
      ['#/executions', '09-executions-tablet'],
      ['#/dashboard', '10-dashboard-tablet'],
    ]) {
      await page.goto(`${BASE}/${hash}`);
      await page.locator('main h1, main .palette').first().waitFor();
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${hash} overflows the width by ${overflow}px`);
      await shot(name);
    }
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  // A pipeline written through the API with every field the design names, most
  // of which the canvas has no editor for: opened, a node moved and saved, it
  // must come back from the API as it was (positions are kept by the browser,
  // not in the definition); then edits made with the canvas's editors come
  // back as exactly those edits, and a refusal lands on the field at fault.
  step('round trip: an API pipeline opened, moved and saved comes back unchanged', async () => {
    const created = await apiSend('POST', '/v1/pipelines', {
      pipelineName: 'e2e round trip',
      version: '2.1.0',
      metadata: { createdBy: 'e2e-api-client', createdAt: '2026-12-01T10:00:00Z', description: 'written through the API' },
      steps: [
        {
          stepId: 'shrink',
          componentName: 'resize',
          componentVersion: '1.0.0',
          dependencies: [],
          parameters: { width: 320 },
          resources: { cpu: '500m', memory: '256Mi', gpu: 0 },
          retryPolicy: { maxRetries: 2, backoffFactor: 1.5 },
          timeoutSeconds: 30,
          fallback: { componentName: 'resize', parameters: { width: 160, quality: 'fast' } },
        },
        {
          stepId: 'sharpen',
          componentName: 'filter',
          dependencies: ['shrink'],
          parameters: { filter_type: 'SHARPEN' },
          continueOnFailure: true,
          fallback: { componentName: 'filter', parameters: {} },
        },
        { stepId: 'find', componentName: 'ai_detection', dependencies: ['shrink'], parameters: {} },
        // Two dependencies: the first listed hands its image on, so the order matters.
        { stepId: 'grey', componentName: 'filter', dependencies: ['find', 'sharpen'], parameters: { filter_type: 'grayscale' } },
      ],
      globalParameters: { inputPath: 'uploads/in.jpg', outputPath: 'results/', team: 'vision', limits: { images: 3 } },
      timeoutSeconds: 120,
    });
    const id = created.pipelineId;
    roundTripId = id;
    const before = await api(`/v1/pipelines/${id}`);

    await page.goto(`${BASE}/#/?pipeline=${encodeURIComponent(id)}`);
    await node('grey').waitFor();
    await page.locator('[data-save-state="saved"]', { hasText: 'revision 1' }).waitFor();
    // What has no editor is shown, read-only, where the user looks.
    await node('shrink').click();
    const inspector = page.locator('[data-inspector="shrink"]');
    await inspector.waitFor();
    const kept = JSON.parse(await inspector.locator('[data-json] pre').textContent());
    assert.deepEqual(kept, { componentVersion: '1.0.0', resources: { cpu: '500m', memory: '256Mi', gpu: 0 } });
    assert.equal(await inspector.getByLabel('Fallback: run instead when it still fails').inputValue(), 'resize');
    assert.equal(await inspector.getByLabel('fallback width', { exact: true }).inputValue(), '160');
    assert.match(await inspector.getByLabel(/^Retries/).inputValue(), /^2$/);
    assert.equal(await inspector.getByLabel(/^Attempt timeout/).inputValue(), '30');
    // A parameter the definition leaves out shows its default.
    assert.equal(await inspector.getByLabel('height', { exact: true }).inputValue(), '600');
    await page.locator('.board').click({ position: { x: 5, y: 5 } });
    const panel = page.locator('[data-inspector="pipeline"]');
    await panel.waitFor();
    assert.equal(await panel.getByLabel('inputPath').inputValue(), 'uploads/in.jpg');
    assert.equal(await panel.getByLabel(/^Execution timeout/).inputValue(), '120');
    assert.deepEqual(JSON.parse(await panel.locator('[data-json="global-other"] pre').textContent()), {
      limits: { images: 3 },
      team: 'vision',
    });
    assert.match(await panel.locator('[data-json="pipeline-extra"] pre').textContent(), /e2e-api-client/);

    // "SHARPEN" is what the API was given (the registry takes any case): shown as the option it means, kept as given.
    await node('sharpen').click();
    assert.equal(await page.locator('[data-inspector="sharpen"]').getByLabel('filter_type', { exact: true }).inputValue(), 'sharpen');

    const head = await centre(node('sharpen').locator('.node-head'));
    const was = await node('sharpen').boundingBox();
    await drag(head, { x: head.x, y: head.y + 260 });
    const now = await node('sharpen').boundingBox();
    assert.ok(Math.abs(now.y - was.y - 260) < 3, `node moved ${now.y - was.y}px, not 260`);
    await page.getByRole('button', { name: 'Save revision' }).click();
    await page.locator('[data-save-state="saved"]', { hasText: 'revision 2' }).waitFor();
    const after = await api(`/v1/pipelines/${id}`);
    assert.equal(after.revision, 2);
    assert.deepEqual(definitionPart(after), definitionPart(before));
    await shot('11-round-trip');

    // Reopened from the API alone (the tab's working copy dropped), the moved
    // node is where it was left: the browser keeps positions by pipeline id.
    const style = await node('sharpen').evaluate((e) => `${e.style.left} ${e.style.top}`);
    await page.evaluate(() => sessionStorage.removeItem('imageflow.canvasDraft'));
    await page.reload();
    await page.getByText('The canvas is empty.').waitFor();
    await page.goto(`${BASE}/#/?pipeline=${encodeURIComponent(id)}`);
    await node('sharpen').waitFor();
    assert.equal(await node('sharpen').evaluate((e) => `${e.style.left} ${e.style.top}`), style);
  });

  step('editors for failure handling and globals; a refusal lands on its field', async () => {
    const id = roundTripId;
    assert.ok(id, 'the round-trip step created the pipeline');
    const before = await api(`/v1/pipelines/${id}`);

    await node('find').click();
    const find = page.locator('[data-inspector="find"]');
    await find.getByLabel(/^Retries/).fill('3');
    await find.getByLabel(/^Skip it and go on/).check();
    // Fall back to what another step does: its component and parameters.
    await find.getByLabel(/fall back to what another step does/).selectOption({ label: 'grey (filter)' });
    assert.equal(await find.getByLabel('fallback filter_type').inputValue(), 'grayscale');

    // Only the server knows a fallback resize to 0×0 is refused: its message goes on that field.
    await node('shrink').click();
    const shrink = page.locator('[data-inspector="shrink"]');
    await shrink.getByLabel('fallback width', { exact: true }).fill('0');
    await shrink.getByLabel('fallback height', { exact: true }).fill('0');
    await page.getByRole('button', { name: 'Save revision' }).click();
    await shrink.locator('[data-param="fallback.width"] .field-error', { hasText: 'both 0' }).waitFor();
    await node('shrink').locator('.node-error', { hasText: 'fallback' }).waitFor();
    await shot('12-fallback-refused');
    await shrink.getByLabel('fallback width', { exact: true }).fill('200');
    assert.equal(await page.locator('.field-error').count(), 0);

    // A field without an editor of its own, edited as JSON; a bad edit is refused in place.
    await node('grey').click();
    const grey = page.locator('[data-inspector="grey"]');
    await grey.getByRole('button', { name: 'Edit as JSON' }).click();
    await grey.getByLabel('Other fields').fill('{"stepId": "x"}');
    await grey.getByRole('button', { name: 'Apply' }).click();
    await grey.locator('[data-json] .field-error', { hasText: 'stepId has an editor of its own' }).waitFor();
    await grey.getByLabel('Other fields').fill('{"componentVersion": "1.0.0"}');
    await grey.getByRole('button', { name: 'Apply' }).click();
    assert.deepEqual(JSON.parse(await grey.locator('[data-json] pre').textContent()), { componentVersion: '1.0.0' });

    await page.locator('.board').click({ position: { x: 5, y: 5 } });
    await page.getByLabel('outputPath').fill('results/v2/');
    await page.getByRole('button', { name: 'Save revision' }).click();
    await page.locator('[data-save-state="saved"]', { hasText: 'revision 3' }).waitFor();

    const after = await api(`/v1/pipelines/${id}`);
    const expected = structuredClone(definitionPart(before));
    const [shrinkStep, , findStep] = expected.steps;
    shrinkStep.fallback.parameters = { ...shrinkStep.fallback.parameters, width: 200, height: 0 };
    Object.assign(findStep, {
      retryPolicy: { maxRetries: 3, backoffFactor: 2 },
      continueOnFailure: true,
      fallback: { componentName: 'filter', parameters: { filter_type: 'grayscale' } },
    });
    expected.steps[3].componentVersion = '1.0.0';
    expected.globalParameters.outputPath = 'results/v2/';
    assert.deepEqual(definitionPart(after), expected);
  });

  // Several dropped images are one execution: each runs the whole pipeline,
  // and the canvas shows a tile per input with its final image.
  step('runs five dropped images as one execution, a result tile each', async () => {
    await page.goto(`${BASE}/#/`);
    page.once('dialog', (d) => d.accept());
    await page.getByRole('button', { name: 'New', exact: true }).click();
    await page.getByText('The canvas is empty.').waitFor();
    await page.getByRole('button', { name: 'Add a resize step' }).click();
    await page.getByRole('button', { name: 'Add a filter step' }).click();
    await connect('resize', 'filter');

    // Five different images, drawn in the page.
    const transfer = await page.evaluateHandle(async () => {
      const dt = new DataTransfer();
      for (let i = 0; i < 5; i++) {
        const canvas = new OffscreenCanvas(120 + 20 * i, 90 + 10 * i);
        const g = canvas.getContext('2d');
        g.fillStyle = `hsl(${i * 70}, 70%, 50%)`;
        g.fillRect(0, 0, canvas.width, canvas.height);
        g.fillStyle = '#fff';
        g.fillRect(10, 10, 30 + 5 * i, 30);
        const blob = await canvas.convertToBlob({ type: 'image/png' });
        dt.items.add(new File([blob], `batch-${i}.png`, { type: 'image/png' }));
      }
      return dt;
    });
    await page.dispatchEvent('[data-dropzone="images"]', 'drop', { dataTransfer: transfer });
    for (let i = 0; i < 5; i++) {
      await page.locator(`.file-card[data-file="batch-${i}.png"] input:checked`).waitFor();
    }

    const isStart = (r) => r.method() === 'POST' && new URL(r.url()).pathname === '/v1/executions';
    const posts = [];
    const onRequest = (r) => isStart(r) && posts.push(r.postDataJSON());
    page.on('request', onRequest);
    const [started] = await Promise.all([
      page.waitForResponse((r) => isStart(r.request())),
      page.getByRole('button', { name: 'Run on 5 images' }).click(),
    ]);
    const { execution_id: id } = await started.json();
    // The earlier run's execution is watched until this one's arrives: wait for this one.
    const watched = page.locator(`.watched[data-execution="${id}"][data-execution-status="completed"]`);
    await watched.waitFor({ timeout: 60_000 });
    page.off('request', onRequest);
    assert.equal(posts.length, 1, 'one execution for the five images');
    assert.equal(posts[0].inputs.length, 5);

    const tiles = watched.locator('.input-tile');
    assert.equal(await tiles.count(), 5);
    await page.locator('[data-inputs-line]', { hasText: '5 of 5 inputs completed' }).waitFor();
    for (let i = 0; i < 5; i++) {
      const tile = watched.locator(`.input-tile[data-input-index="${i}"]`);
      assert.equal(await tile.getAttribute('data-status'), 'completed');
      await tile.locator('button', { hasText: `batch-${i}.png` }).waitFor();
      assert.match(await tile.textContent(), /2\/2 steps/);
    }
    // Every tile shows its own final image, downloaded.
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('.watched .input-tile img.input-thumb')];
      return imgs.length === 5 && imgs.every((img) => img.complete && img.naturalWidth > 0);
    });
    const outputs = await tiles.locator('img').evaluateAll((els) => els.map((e) => e.dataset.output));
    assert.equal(new Set(outputs).size, 5, 'five different outputs');
    // The nodes sum up every input's run of the step.
    for (const id of ['resize', 'filter']) {
      assert.equal(await node(id).getAttribute('data-status'), 'completed');
      assert.equal(await node(id).locator('[data-progress]').textContent(), '5/5 done');
    }
    await shot('13-canvas-five-inputs');

    // Following one input: the nodes show its own run, and its outputs appear.
    await watched.locator('.input-tile[data-input-index="2"] button').click();
    await node('filter').locator('[data-time]').waitFor();
    await watched.locator('[data-result="filter"] img').waitFor();

    const record = await api(`/v1/executions/${id}`);
    assert.equal(record.status, 'completed');
    assert.deepEqual(
      record.input_results.map((r) => [r.index, r.status, Boolean(r.output?.file_id)]),
      [0, 1, 2, 3, 4].map((i) => [i, 'completed', true]),
    );
    assert.equal(record.steps.length, 10);

    // The execution page: the same tiles, and the picked input's timeline.
    await page.goto(`${BASE}/#/executions/${id}`);
    await page.locator('[data-execution-status="completed"] .input-tile[data-status="completed"]').nth(4).waitFor();
    assert.equal(await page.locator('.gantt-row').count(), 2);
    await page.locator('.input-tile[data-input-index="3"] button').click();
    await page.getByRole('heading', { name: 'Timeline of input 3' }).waitFor();
    await shot('14-execution-five-inputs');
  });

  step('no script errors, no blocked resources', async () => {
    assert.deepEqual(pageErrors, []);
    // 401s before the token was entered and the three 400s refusing the cycle,
    // the bad parameter and the bad fallback are expected; anything else is not.
    const unexpected = consoleErrors.filter((t) => !/401 \(Unauthorized\)/.test(t));
    assert.deepEqual(unexpected, Array(3).fill('Failed to load resource: the server responded with a status of 400 (Bad Request)'));
  });
});
