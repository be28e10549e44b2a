export type { TransferStats, TransferTransport } from './transfer-stats';
export {
  sendImage,
  defaultImageSenderOptions,
  compileImageSenderOptions,
  DEFAULT_CHUNK_BYTES,
  DEFAULT_WINDOW_CHUNKS,
  DEFAULT_WINDOW_BYTES,
  DEFAULT_IDLE_TIMEOUT_MS,
} from './image-sender';
export type { ImageSenderOptions } from './image-sender';
export type { FilePump, FilePumpCounts } from './file-pump';
export type { LiveImageFile } from './image-frames';
export { spillLiveFiles } from './live-spill';
export type { FileSink } from './incoming-file';
export { fileBodyKey, fileBodyNoncePrefix } from './file-pump';
export { DIRECT_OFFER_TIMEOUT_MS, DIRECT_CONNECT_TIMEOUT_MS } from './direct-path';
export {
  ImageReceiver,
  defaultImageReceiverOptions,
  compileImageReceiverOptions,
  DEFAULT_RECEIVE_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_FILE_BYTES,
  DEFAULT_MAX_TOTAL_BYTES,
  DEFAULT_MAX_FILES,
} from './image-receiver';
export type { ImageReceiverOptions } from './image-receiver';
export { imagePathProblem, resolveImagePath, MAX_IMAGE_PATH_BYTES } from './image-path';
export { FrameSealer, FrameOpener } from './chunk-cipher';
export type { InPlaceAead } from './chunk-cipher';
export { ControlFrameAuthenticator, CONTROL_MAC_BYTES } from './control-frame-auth';
export {
  servePageRequests,
  requestPages,
  pageRequestKey,
  maxPagesPerReply,
  DEFAULT_PAGE_REQUEST_TIMEOUT_MS,
} from './page-requests';
export type { PageLookup, PageRun, PageResponder } from './page-requests';
export { presizeLargeNatsPayloads, recycleNatsPayload, MAX_PRESIZED_PAYLOAD_BYTES } from './nats-large-payloads';
