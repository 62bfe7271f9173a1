# Pipeline test ds-tasks prompts | ds-rollout | ds-reward | ds-rejsample (included by tests/cli/CMakeLists.txt);
# without ds-tasks a fixture supplies the prompts.
if(TARGET ds-rollout AND TARGET ds-reward AND TARGET ds-rejsample AND TARGET ds-pretrain AND TARGET ds-tokenize)
  set(_pipe_tasks "")
  if(TARGET ds-tasks)
    set(_pipe_tasks $<TARGET_FILE:ds-tasks>)
  endif()
  add_test(NAME cli_pipe_rollout_reward_rejsample
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/pipe_rollout_reward_rejsample.sh $<TARGET_FILE:ds-rollout>
                   $<TARGET_FILE:ds-reward> $<TARGET_FILE:ds-rejsample> $<TARGET_FILE:ds-pretrain>
                   $<TARGET_FILE:ds-tokenize> ${_pipe_tasks})
  set_tests_properties(cli_pipe_rollout_reward_rejsample PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=passive TIMEOUT 300
                                                                    SKIP_RETURN_CODE 77)
endif()
