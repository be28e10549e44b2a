/** Carried in every message; a receiver refuses other versions with FAILED_PRECONDITION. */
export const PROTOCOL_VERSION = 1;
