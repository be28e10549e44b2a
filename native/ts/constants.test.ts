import * as constants from './constants';
import { loadNativeBinding } from './native-binding';

describe('constants', () => {
  it('match the values the addon took from the C headers', () => {
    const binding = loadNativeBinding() as unknown as Record<string, unknown>;
    const names = Object.keys(constants);
    expect(names.length).toBe(26);
    for (const name of names) {
      expect([name, binding[name]]).toEqual([name, (constants as Record<string, number>)[name]]);
    }
  });
});
