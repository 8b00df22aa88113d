// The package's TypeScript declarations (index.d.ts, the generated
// contracts.d.ts, react.d.ts) compile under strict settings with every
// declaration file checked, and type a realistic use correctly, including
// refusing wrong payload shapes (tests/packaging/types/usage.mts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ROOT, run } from '../support/node.mjs';

const tsc = join(ROOT, 'node_modules/.bin/tsc');

for (const config of ['tsconfig.json', 'tsconfig.bundler.json']) {
  test(`the package's .d.ts files type-check (tests/packaging/types/${config})`, async () => {
    const project = join(ROOT, 'tests/packaging/types', config);
    const result = await run(tsc, ['--noEmit', '-p', project], { cwd: ROOT }).then(
      ({ stdout, stderr }) => ({ code: 0, output: stdout + stderr }),
      (err) => ({ code: err.code, output: `${err.stdout ?? ''}${err.stderr ?? ''}${err.message}` }),
    );
    assert.equal(result.code, 0, result.output);
  });
}
