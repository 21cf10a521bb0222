/**
 * The layers of src/, lowest first: a module may import from its own layer and the layers before it, never from a
 * later one. Layers on one line are siblings and may not import each other. docs/architecture.md explains each.
 */
const LAYERS = [
  ['core'],
  ['datasets'],
  ['onnx'],
  ['autodiff'],
  ['linalg'],
  ['models'],
  ['classifiers'],
  ['pipeline'],
  ['attack'],
  ['finetune'],
  ['serving'],
  ['grpc', 'http'],
  ['server'],
  ['eval'],
  ['bench'],
  ['cli'],
];

const rules = LAYERS.flatMap((layer, rank) => {
  const above = LAYERS.slice(rank + 1).flat();
  return layer
    .map((name) => {
      const forbidden = [...above, ...layer.filter((sibling) => sibling !== name)];
      return {
        name: `${name}-points-down`,
        comment: `src/${name} may only import from the layers below it`,
        severity: 'error',
        from: { path: `^src/${name}/` },
        to: { path: `^src/(${forbidden.join('|')})/` },
      };
    })
    .filter((rule) => rule.to.path !== '^src/()/');
});

module.exports = {
  forbidden: [
    ...rules,
    {
      name: 'no-cycles',
      comment: 'modules that import each other cannot be read or tested one at a time',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'src-has-no-unknown-layer',
      comment: 'every folder of src/ is a layer named in .dependency-cruiser.cjs',
      severity: 'error',
      from: { path: `^src/(?!(${LAYERS.flat().join('|')})/)` },
      to: {},
    },
    {
      name: 'serving-is-transport-neutral',
      comment: 'the request queue and workers know no transport: status codes are mapped in src/grpc and src/http',
      severity: 'error',
      from: { path: '^src/serving/' },
      to: { path: '@grpc/|node_modules/(fastify|@fastify)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    parser: 'swc',
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
