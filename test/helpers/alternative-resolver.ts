/**
 * Imported before anything that loads grpc-js: its DNS resolver then asks the server a `dns://server/name` target
 * names (grpc-js reads this switch once, at load), so a test can answer with its own records.
 */
process.env.GRPC_NODE_USE_ALTERNATIVE_RESOLVER = 'true';
