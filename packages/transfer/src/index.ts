export type { Logger } from './logger';
export { silentLogger } from './logger';
export type { TransferStats } from './transfer-stats';
export {
  sendImage,
  defaultImageSenderOptions,
  compileImageSenderOptions,
  DEFAULT_CHUNK_BYTES,
  DEFAULT_WINDOW_CHUNKS,
  DEFAULT_IDLE_TIMEOUT_MS,
} from './image-sender';
export type { ImageSenderOptions } from './image-sender';
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
