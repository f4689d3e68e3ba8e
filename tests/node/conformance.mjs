// The conformance scenario (tests/conformance/scenario.json) on the component under Node.js
// through jco: the same answers, error kinds and messages as every other target (see the
// file's "about"). Run by `make node-test` after run.mjs, which transpiles the component into
// out/ (this script transpiles it too when out/ is missing).
//
// How the file's notions map onto the WIT interface, and only these:
// - an error's kind is the WIT error variant's tag in PascalCase (`duplicate-id` is
//   DuplicateId); its message is the payload's `message` when the variant carries one, else
//   rebuilt here from the payload's fields in srvdb::Error's Display wording (`messageOf`);
// - u64 answers (count) arrive as BigInt and are compared as numbers; search and
//   search_batch are one `query` request (batch false or true);
// - each scenario opens `/db/<name>` inside one preopened temporary directory, so `{dir}` is
//   that guest path.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { out, transpileOnce } from './transpile.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const scenario = JSON.parse(readFileSync(join(here, '../conformance/scenario.json'), 'utf8'));
const tolerance = scenario.score_tolerance;
const TARGET = 'node';

transpileOnce();

const special = { NaN: NaN, inf: Infinity, '-inf': -Infinity };
const number = (x) => (typeof x === 'string' ? special[x] : x);
const flat = (rows) => Float32Array.from(rows.flat().map(number));

/** Equal, with numbers (and BigInts) within the tolerance; exact elsewhere. */
function same(want, got) {
  if (typeof got === 'bigint') got = Number(got);
  if (typeof want === 'number' && typeof got === 'number') return Math.abs(want - got) <= tolerance;
  if (Array.isArray(want)) {
    return (Array.isArray(got) || ArrayBuffer.isView(got)) && want.length === got.length
      && want.every((w, i) => same(w, got[i]));
  }
  if (want !== null && typeof want === 'object') {
    if (got === null || typeof got !== 'object') return false;
    const keys = Object.keys(want);
    return keys.length === Object.keys(got).length && keys.every((k) => same(want[k], got[k]));
  }
  return want === got;
}

const show = (v) => JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? Number(x)
  : ArrayBuffer.isView(x) ? Array.from(x) : x));

const at = (index) => (index === undefined || index === null ? '' : ` at index ${index}`);

/** srvdb::Error's Display text for a WIT error: the payload's message if it has one, else
 *  rebuilt from its fields (the cases the scenario raises; others show their payload). */
function messageOf({ tag, val }) {
  if (val && typeof val.message === 'string') return val.message;
  switch (tag) {
    case 'dimension-mismatch':
      return `dimension mismatch${at(val.index)}: expected ${val.expected}, got ${val.got}; every vector of a database has its dimension (re-embed with the database's model or open another database)`;
    case 'duplicate-id':
      return `duplicate id ${JSON.stringify(val.id)}${at(val.index)}: each id may appear once in a batch, and add refuses one the database holds (upsert replaces it)`;
    case 'not-found':
      return `id ${JSON.stringify(val)} not found`;
    case 'invalid-input':
      return `invalid input${at(val.index)}: ${val.reason}`;
    default:
      return show(val);
  }
}

const kindOf = (tag) => tag.replace(/(^|-)([a-z])/g, (_, __, c) => c.toUpperCase());

// The requests of the WIT interface (write, remove, query), in one place.
const request = {
  write: (db, mode, step) => db.write({
    mode, ids: step.ids, vectors: flat(step.vectors), metadatas: step.metadatas ?? [], documents: step.documents ?? [],
  }),
  remove: (db, step) => db.remove({ ids: step.ids, skipMissing: step.skip_missing ?? false }),
  query: (db, queries, batch, k) => db.query({ queries, batch, k, exact: false }),
};

const hits = (found) => found.map((h) => [h.id, h.score]);
const record = (r) => (r === undefined || r === null ? null : {
  id: r.id, vector: Array.from(r.vector), metadata: r.metadata ?? null, document: r.document ?? null,
});

function apply(db, op, step) {
  switch (op) {
    case 'add': case 'upsert': request.write(db, op, step); return null;
    case 'delete': return request.remove(db, step);
    case 'get': return record(db.get(step.id));
    case 'documents': return db.documents(step.ids).map((d) => d ?? null);
    case 'contains': return db.contains(step.id);
    case 'count': return db.count();
    case 'ids': return db.ids();
    case 'dimension': return db.dimension() ?? null;
    case 'metric': return db.metric();
    case 'search': {
      const found = request.query(db, Float32Array.from(step.query.map(number)), false, step.k);
      return found.length === 1 ? hits(found[0]) : `${found.length} hit lists for one query`;
    }
    case 'search_batch': return request.query(db, flat(step.queries), true, step.k).map(hits);
    case 'persist': db.persist(); return null;
    case 'compact': db.compact(); return null;
    default: throw new Error(`scenario.json: unknown op ${op}`);
  }
}

function expected(step, dir) {
  const d = step.deviations ?? {};
  const chosen = d[TARGET] ?? step;
  if (chosen.skip) return { skip: chosen.skip };
  if (chosen.error) return { error: { kind: chosen.error.kind, message: chosen.error.message.replaceAll('{dir}', dir) } };
  return { answer: chosen.expect ?? null };
}

const root = mkdtempSync(join(tmpdir(), 'srvdb-node-conformance-'));
const failures = [];
let steps = 0;
try {
  const { _setPreopens } = await import('./fs-writable.js');
  _setPreopens({ '/db': root });
  const { store } = await import(join(out, 'srvdb.js'));
  for (const sc of scenario.scenarios) {
    const dir = `/db/${sc.name}`;
    let db = null;
    const close = () => { if (db) { db[Symbol.dispose](); db = null; } };
    sc.steps.forEach((step, i) => {
      steps += 1;
      const want = expected(step, dir);
      if (want.skip) {
        console.log(`${TARGET} / ${sc.name}: ${step.op} not run: ${want.skip}`);
        steps -= 1;
        return;
      }
      let got, gotError;
      try {
        const options = {};
        if (step.dimension !== undefined) options.dimension = step.dimension;
        if (step.metric !== undefined) options.metric = step.metric;
        if (step.op === 'open' || step.op === 'reopen') {
          close();
          db = store.Database.open(dir, options);
          got = null;
        } else if (step.op === 'open_second') {
          store.Database.open(dir, options)[Symbol.dispose]();
          got = null;
        } else if (!db) {
          failures.push(`${TARGET} / ${sc.name} / step ${i} (${step.op}): no open database (an earlier open failed)`);
          return;
        } else {
          got = apply(db, step.op, step);
        }
      } catch (e) {
        if (!e.payload?.tag) throw e;
        gotError = { kind: kindOf(e.payload.tag), message: messageOf(e.payload) };
      }
      let why = null;
      if (want.error && !gotError) why = `expected error ${show(want.error)}, got ${show(got)}`;
      else if (!want.error && gotError) why = `expected ${show(want.answer)}, got error ${show(gotError)}`;
      else if (want.error && (want.error.kind !== gotError.kind || want.error.message !== gotError.message)) {
        why = `expected error ${show(want.error)}, got ${show(gotError)}`;
      } else if (!want.error && !same(want.answer, got)) why = `expected ${show(want.answer)}, got ${show(got)}`;
      if (why) failures.push(`${TARGET} / ${sc.name} / step ${i} (${step.op}): ${why}`);
    });
    close();
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
if (failures.length) {
  console.error(`${failures.length} of ${steps} conformance steps disagree with tests/conformance/scenario.json:\n${failures.join('\n')}`);
  process.exit(1);
}
console.log(`node (jco): ${steps} conformance steps agree`);
