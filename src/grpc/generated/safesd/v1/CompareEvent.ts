// Original file: proto/safesd/v1/diffusion.proto

import type { Queued as _safesd_v1_Queued, Queued__Output as _safesd_v1_Queued__Output } from '../../safesd/v1/Queued.js';
import type { Progress as _safesd_v1_Progress, Progress__Output as _safesd_v1_Progress__Output } from '../../safesd/v1/Progress.js';
import type { CompareResult as _safesd_v1_CompareResult, CompareResult__Output as _safesd_v1_CompareResult__Output } from '../../safesd/v1/CompareResult.js';
import type { Preview as _safesd_v1_Preview, Preview__Output as _safesd_v1_Preview__Output } from '../../safesd/v1/Preview.js';

export interface CompareEvent {
  'queued'?: (_safesd_v1_Queued | null);
  'progress'?: (_safesd_v1_Progress | null);
  'result'?: (_safesd_v1_CompareResult | null);
  'preview'?: (_safesd_v1_Preview | null);
  'event'?: "queued"|"progress"|"result"|"preview";
}

export interface CompareEvent__Output {
  'queued'?: (_safesd_v1_Queued__Output | null);
  'progress'?: (_safesd_v1_Progress__Output | null);
  'result'?: (_safesd_v1_CompareResult__Output | null);
  'preview'?: (_safesd_v1_Preview__Output | null);
  'event'?: "queued"|"progress"|"result"|"preview";
}
