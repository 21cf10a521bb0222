/** The longest message an InputError keeps: a fuzzed header can name a megabyte-long tensor. */
export const MAX_MESSAGE_CHARS = 600;

/**
 * Something the user handed in is wrong: a file's contents, a request field, a command-line option. The CLI prints
 * the message and exits 2; the server answers INVALID_ARGUMENT for the request errors among them. Any other error
 * is the program's own failure (exit 1). The message is one readable line whatever the input held: control
 * characters (a newline in a tensor name) are escaped and it is cut at MAX_MESSAGE_CHARS.
 */
export class InputError extends Error {
  override name = 'InputError';

  constructor(message: string) {
    super(oneLine(message));
  }
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is escaped here
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f\u2028\u2029]/g;

function oneLine(message: string): string {
  const flat = message.replace(CONTROL_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return flat.length > MAX_MESSAGE_CHARS ? `${flat.slice(0, MAX_MESSAGE_CHARS - 1)}…` : flat;
}
