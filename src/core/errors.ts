/**
 * Something the user handed in is wrong: a file's contents, a request field, a command-line option. The message is
 * one line that names the input and what is wrong with it. The CLI prints it and exits 2; the server answers
 * INVALID_ARGUMENT for the request errors among them. Any other error is the program's own failure (exit 1).
 */
export class InputError extends Error {
  override name = 'InputError';
}
