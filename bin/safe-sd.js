#!/usr/bin/env node
// The CLI runs from the TypeScript sources: tsx compiles them on the fly, so there is no build step to forget.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
