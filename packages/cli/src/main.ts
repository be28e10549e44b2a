/** `ferry`, the operator CLI. It has no logic of its own: each command asks the coordinator. */
import { Command } from 'commander';
import { registerCordon } from './commands/cordon';
import { registerDev } from './commands/dev';
import { registerDrain } from './commands/drain';
import { registerDemo } from './commands/demo';
import { registerEvents } from './commands/events';
import { registerHosts } from './commands/hosts';
import { registerMigrate } from './commands/migrate';
import { registerPs } from './commands/ps';
import { registerRun } from './commands/run';
import { registerStatus } from './commands/status';
import { registerStop } from './commands/stop';
import { exitOnClosedPipe } from './output';

exitOnClosedPipe(process.stdout);
exitOnClosedPipe(process.stderr);

const program = new Command()
  .name('ferry')
  .description('live-migrate Linux process groups between hosts')
  .showHelpAfterError()
  // A command's options belong to it: `ferry hosts add NAME --json` gives --json to `add`, not to `hosts`.
  .enablePositionalOptions()
  // Usage errors exit 1; every other failure exits with its error code's status (see README).
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 1));
registerRun(program);
registerPs(program);
registerHosts(program);
registerStop(program);
registerMigrate(program);
registerStatus(program);
registerCordon(program);
registerDrain(program);
registerEvents(program);
registerDev(program);
registerDemo(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`ferry: ${(err as Error).message}\n`);
  process.exit(1);
});
