import { crc32 } from 'node:zlib';
import { decode, parseMessage, PROTOCOL_VERSION } from '@ferry/protocol';
import { allocChunkFrame } from './chunk-frame-writer';
import { ChunkFrame } from './frames';

describe('allocChunkFrame', () => {
  it.each([
    [0, 'pages-1.img', 0, 1],
    [7, 'sub/dir/ünïcode.img', 524_288, 1000],
    [2 ** 40 + 3, 'big.img', 2 ** 45 + 17, 4096],
  ])('lays out a frame that decodes and validates (seq %d, path %j)', (seq, path, offset, size) => {
    const { frame, data, setCrc } = allocChunkFrame(seq, path, offset, size);
    for (let i = 0; i < size; i++) data[i] = (i * 31 + 7) & 0xff;
    setCrc(crc32(data));
    const parsed = parseMessage(ChunkFrame, decode(frame, 1 << 20));
    expect(parsed).toEqual({ v: PROTOCOL_VERSION, t: 'chunk', seq, path, offset, data: expect.anything(), crc: crc32(data) });
    expect(Buffer.from(parsed.data).equals(data)).toBe(true);
    // The payload area is the frame's tail: nothing follows the data.
    expect(data.byteOffset + data.byteLength).toBe(frame.byteOffset + frame.byteLength);
  });

  it('leaves the reserve free around the frame, inside one allocation', () => {
    const { frame, envelope } = allocChunkFrame(1, 'pages-1.img', 0, 100, { head: 40, tail: 16 });
    expect(frame.buffer).toBe(envelope.buffer);
    expect(frame.byteOffset - envelope.byteOffset).toBe(40);
    expect(envelope.byteLength).toBe(40 + frame.byteLength + 16);
    expect(parseMessage(ChunkFrame, decode(frame, 1 << 20)).path).toBe('pages-1.img');
  });
});
