// Original file: proto/safesd/v1/diffusion.proto


export interface ListModelsRequest {
}

export interface ListModelsRequest__Output {
}
