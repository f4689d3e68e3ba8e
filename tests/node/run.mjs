// The same srvdb.wasm that wasmtime runs, under Node.js through jco: open a database, add,
// search, filter, update, persist, drop, reopen in the same process and in a second process, and
// check the answers against a brute-force reference computed here in JavaScript.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { out, transpileOnce } from './transpile.mjs';
import assert from 'node:assert/strict';

const here = dirname(fileURLToPath(import.meta.url));
const [, , mode, dbDirArg] = process.argv;

async function load(dbDir) {
  const { _setPreopens } = await import('./fs-writable.js');
  _setPreopens({ '/db': dbDir });
  const mod = await import(join(out, 'srvdb.js'));
  return mod.store;
}

function vectors(n, dim, seed) {
  let s = BigInt(seed);
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n * dim; i++) {
    s = (s * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn;
    out[i] = Number(s >> 40n) / 2 ** 24 * 2 - 1;
  }
  return out;
}

function bruteForce(data, n, dim, q, k) {
  const qn = Math.hypot(...q);
  const scored = [];
  for (let i = 0; i < n; i++) {
    let dot = 0, rn = 0;
    for (let j = 0; j < dim; j++) { dot += data[i * dim + j] * q[j]; rn += data[i * dim + j] ** 2; }
    scored.push([i, dot / (qn * Math.sqrt(rn))]);
  }
  scored.sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  return scored.slice(0, k);
}

const N = 300, DIM = 16;
const data = vectors(N, DIM, 42);
const query = Array.from(vectors(1, DIM, 7));
const want = bruteForce(data, N, DIM, query, 5);

// One query through the WIT `query` operation (a single vector, not a batch).
function search(db, q, k) {
  const lists = db.query({ queries: q, batch: false, k, exact: false });
  assert.equal(lists.length, 1, 'one hit list for one query');
  return lists[0];
}

function checkHits(hits, label) {
  assert.equal(hits.length, 5, `${label}: 5 hits`);
  hits.forEach((h, i) => {
    assert.equal(h.id, `n${want[i][0]}`, `${label}: rank ${i}`);
    assert.ok(Math.abs(h.score - want[i][1]) < 1e-5, `${label}: score ${h.score} vs ${want[i][1]}`);
  });
}

// Filters and the data API of issue 15 through jco: a database with JSON metadata and documents
// in a subdirectory of the preopen; every answer checked against the matching rows computed here.
function filteredChecks(store) {
  const fdb = store.Database.open('/db/filtered', {});
  const M = 200;
  const fdata = vectors(M, DIM, 99);
  const ids = Array.from({ length: M }, (_, i) => `f${i}`);
  const meta = (i) => ({ year: 1990 + (i % 30), tag: ['a', 'b', 'c'][i % 3] });
  const metas = ids.map((_, i) => JSON.stringify(meta(i)));
  const docs = ids.map((_, i) => (i % 4 === 0 ? 'about rust' : 'about wasm'));
  fdb.write({ mode: 'add', ids, vectors: fdata, metadatas: metas, documents: docs });

  // {"year": {"$gt": 2010}, "tag": {"$ne": "b"}}, evaluated here on the metadata objects.
  const filter = { where: JSON.stringify({ year: { $gt: 2010 }, tag: { $ne: 'b' } }) };
  const metaOf = ids.map((_, i) => meta(i));
  const matching = () => [...Array(M).keys()].filter((i) => metaOf[i].year > 2010 && metaOf[i].tag !== 'b');
  let expected = matching();
  assert.ok(expected.length > 5 && expected.length < M, 'the filter selects a proper subset');
  assert.equal(fdb.countMatching(filter), BigInt(expected.length), 'count-matching');
  const recs = fdb.records({ filter, offset: 0n });
  assert.deepEqual(recs.map((r) => r.id), expected.map((i) => `f${i}`), 'records in insertion order');
  const page = fdb.records({ filter, limit: 3n, offset: 2n });
  assert.deepEqual(page.map((r) => r.id), expected.slice(2, 5).map((i) => `f${i}`), 'records page');

  // The filtered top-k: brute force over the matching rows only.
  const sub = new Float32Array(expected.length * DIM);
  expected.forEach((i, j) => sub.set(fdata.subarray(i * DIM, (i + 1) * DIM), j * DIM));
  const best = bruteForce(sub, expected.length, DIM, query, 5);
  const hits = fdb.query({ queries: query, batch: false, k: 5, filter, exact: false })[0];
  assert.equal(hits.length, 5, 'filtered search: 5 hits');
  hits.forEach((h, r) => {
    assert.equal(h.id, `f${expected[best[r][0]]}`, `filtered search: rank ${r}`);
    assert.ok(Math.abs(h.score - best[r][1]) < 1e-5, `filtered search: score ${h.score} vs ${best[r][1]}`);
  });

  const rust = { whereDocument: JSON.stringify({ $contains: 'rust' }) };
  assert.equal(fdb.countMatching(rust), BigInt(docs.filter((d) => d.includes('rust')).length), 'where-document');

  // A metadata-only update makes f1 (tag b) match; then delete by filter.
  fdb.update({ ids: ['f1'], metadatas: [JSON.stringify({ year: 2020, tag: 'a' })] });
  metaOf[1] = { year: 2020, tag: 'a' };
  expected = matching();
  assert.equal(fdb.countMatching(filter), BigInt(expected.length), 'count after update');
  assert.deepEqual(fdb.get('f1').vector, fdata.slice(DIM, 2 * DIM), 'update kept the vector');
  const deleted = fdb.remove({ filter, skipMissing: false });
  assert.equal(deleted, expected.length, 'deleted by filter');
  assert.equal(fdb.count(), BigInt(M - expected.length), 'count after delete');

  fdb.createFieldIndex('tag');
  assert.deepEqual(fdb.fieldIndexes(), ['tag']);
  assert.equal(fdb.countMatching({ where: JSON.stringify({ tag: 'b' }) }), BigInt(metaOf.filter((m) => m.tag === 'b').length));
  assert.equal(fdb.dropFieldIndex('tag'), true);
  assert.equal(fdb.dropFieldIndex('tag'), false);

  try {
    fdb.countMatching({ where: '{"year": {"$foo": 1}}' });
    assert.fail('an unknown operator was accepted');
  } catch (e) {
    assert.equal(e.payload?.tag, 'invalid-filter', `typed error, got ${JSON.stringify(e.payload)}`);
    assert.equal(e.payload.val.part, 'where.year.$foo');
  }
  fdb[Symbol.dispose]();
}

if (mode === 'reopen') {
  // Second process: only what the first one persisted is here.
  const store = await load(dbDirArg);
  const db = store.Database.open('/db', {});
  assert.equal(db.count(), BigInt(N), 'count in a second process');
  checkHits(search(db, query, 5), 'second process');
  console.log('node second process: reopened, count and results match');
  process.exit(0);
}

transpileOnce();

const dbDir = mkdtempSync(join(tmpdir(), 'srvdb-node-'));
try {
  const store = await load(dbDir);
  const db = store.Database.open('/db', {});
  const ids = Array.from({ length: N }, (_, i) => `n${i}`);
  db.write({ mode: 'add', ids, vectors: data, metadatas: [], documents: [] });
  try {
    db.write({ mode: 'add', ids: ['n1'], vectors: data.slice(0, DIM), metadatas: [], documents: [] });
    assert.fail('duplicate id accepted');
  } catch (e) {
    assert.equal(e.payload?.tag, 'duplicate-id', `typed error, got ${JSON.stringify(e.payload)}`);
  }
  checkHits(search(db, query, 5), 'first search');
  filteredChecks(store);
  db.persist();
  db[Symbol.dispose]();
  assert.ok(existsSync(join(dbDir, 'vectors.bin')) && existsSync(join(dbDir, 'metadata.db')), 'files written to the preopened directory');
  const again = store.Database.open('/db', {});
  assert.equal(again.count(), BigInt(N));
  checkHits(search(again, query, 5), 'same process after reopen');
  again[Symbol.dispose]();
  execFileSync(process.execPath, [join(here, 'run.mjs'), 'reopen', dbDir], { stdio: 'inherit' });
  console.log('node (jco): open, add, typed error, search, filters, update, field index, persist, reopen: all match the reference');
} finally {
  rmSync(dbDir, { recursive: true, force: true });
}
