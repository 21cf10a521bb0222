import type { GraphBuilder } from '../onnx/graph.js';
import { interpret } from '../onnx/interpret.js';

/**
 * Analytic FLOP count of a graph at concrete input shapes, from the graph interpreter's op table (2 FLOPs per
 * multiply-add in Conv, MatMul, Gemm and attention; element-wise ops are not counted). An op the interpreter does
 * not know, or a counted op whose shapes it cannot work out, is an error, never a silent zero.
 */
export interface FlopCount {
  total: number;
  byOp: Record<string, number>;
}

export function countFlops(g: GraphBuilder, inputShapes: Record<string, number[]>): FlopCount {
  for (const v of g.inputs) {
    if (!inputShapes[v.name] && v.shape.some((d) => typeof d !== 'number'))
      throw new Error(`input ${v.name}: give a concrete shape`);
  }
  const facts = interpret(g, inputShapes);
  if (facts.unknown.length > 0)
    throw new Error(`countFlops: no shape rule for ${facts.unknown[0].op} (node ${facts.unknown[0].name})`);
  const byOp: Record<string, number> = {};
  let total = 0;
  g.nodes.forEach((n, i) => {
    const f = facts.flops[i];
    if (typeof f !== 'number') throw new Error(`countFlops: the shapes of ${n.op} node ${n.name} are not known`);
    if (f === 0) return;
    byOp[n.op] = (byOp[n.op] ?? 0) + f;
    total += f;
  });
  return { total, byOp };
}
