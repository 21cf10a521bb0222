# safe-sd serve in a container: the toy model inside, real weights mounted at /models (deploy/k8s, docs/deploy.md).
#   docker build -t safe-sd .                                  # CPU
#   docker build -t safe-sd:cuda --build-arg ORT_INSTALL=cuda12 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 .   # CUDA execution provider
#   docker run --rm -p 50051:50051 -p 9464:9464 safe-sd
ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${NODE_IMAGE} AS build
# skip: the CPU build, as .npmrc says; cuda12: onnxruntime-node's CUDA provider (downloaded at build time).
ARG ORT_INSTALL=skip
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# The README's install command.
RUN npm ci
RUN if [ "$ORT_INSTALL" != skip ]; then ONNXRUNTIME_NODE_INSTALL=$ORT_INSTALL npm rebuild onnxruntime-node; fi
COPY . .
# The toy model's ONNX graphs, built once here instead of on every pod's first start.
RUN SAFE_SD_CACHE=/app/cache node bin/safe-sd.js generate --prompt "a red star" --steps 1 --out /tmp/warm.png \
 && npm prune --omit=dev

FROM ${RUNTIME_IMAGE}
# Node itself comes from the build image, so the runtime base can be a CUDA image without Node.
COPY --from=build /usr/local/bin/node /usr/local/bin/node
RUN useradd --uid 10001 --no-create-home --home-dir /app safe-sd
WORKDIR /app
COPY --from=build --chown=10001:10001 /app /app
ENV NODE_ENV=production SAFE_SD_CACHE=/app/cache
USER 10001
# gRPC (with the standard health service) and Prometheus /metrics.
EXPOSE 50051 9464
VOLUME ["/models"]
# `npm start` without npm in between, so the server itself receives SIGTERM and drains (--grace-seconds).
ENTRYPOINT ["node", "bin/safe-sd.js"]
CMD ["serve", "--host", "0.0.0.0"]
