// Runs fn with one environment variable set (or unset), restoring it afterwards. The native
// switches (EMAE_CUDA_*, EMAE_ACTIVATIONS, EMAE_PROFILE) are read when a model is created, so
// tests that use this run serially.
export const withEnv = async <T>(name: string, value: string | undefined, fn: () => Promise<T>): Promise<T> => {
  const before = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  }
};
