// One self-contained file, no runtime dependencies: dist/voice-widget.js.
import { build } from 'esbuild';
import { readFile } from 'node:fs/promises';

const { version } = JSON.parse(await readFile(new URL('./package.json', import.meta.url), 'utf8'));

await build({
  entryPoints: ['src/index.js'],
  outfile: 'dist/voice-widget.js',
  bundle: true,
  format: 'iife',
  target: ['es2020'],
  minify: true,
  legalComments: 'none',
  banner: { js: `/* voiceapp voice widget ${version} | built from widget/voice/src by \`npm run build\` */` },
  logLevel: 'info',
});
