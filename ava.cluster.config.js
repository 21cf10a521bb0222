// `npm run test:cluster`: replicas, nginx and killed processes on loopback (a few minutes on 2 cores; .ci/run runs it).
export default {
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  files: ['test/cluster/**/*.test.ts'],
  timeout: '10m',
  workerThreads: false,
};
