import { ErrorCode, FerryError } from '@ferry/protocol';
import { imagePathProblem, resolveImagePath } from './image-path';

describe('imagePathProblem', () => {
  it.each(['pages-1.img', 'sub/dir/core-1.img', 'a b', '.hidden', 'x..y'])('accepts %j', (name) => {
    expect(imagePathProblem(name)).toBeUndefined();
  });

  it.each([
    ['', 'is empty'],
    ['/etc/x', 'is absolute'],
    ['../evil', 'contains ".."'],
    ['a/../../evil', 'contains ".."'],
    ['a//b', 'empty'],
    ['./a', '"."'],
    ['a/', 'empty'],
    ['a\0b', 'NUL'],
    ['x'.repeat(256), 'segment longer'],
    [`${'abcdefgh/'.repeat(120)}z`, 'longer than 1024 bytes'],
  ])('rejects %j', (name, why) => {
    expect(imagePathProblem(name)).toContain(why);
  });
});

describe('resolveImagePath', () => {
  it('places a name inside the root', () => {
    expect(resolveImagePath('/work/img', 'sub/a.img')).toBe('/work/img/sub/a.img');
  });

  it.each(['../evil', '/etc/x', 'a/../../x'])('throws INVALID_ARGUMENT for %j', (name) => {
    let caught: unknown;
    try {
      resolveImagePath('/work/img', name);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(FerryError);
    expect((caught as FerryError).code).toBe(ErrorCode.INVALID_ARGUMENT);
  });
});
