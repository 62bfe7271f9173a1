# Golden CLI test of ds-reward (included by tests/cli/CMakeLists.txt).
if(TARGET ds-reward)
  add_test(NAME cli_ds_reward COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ds_reward.sh $<TARGET_FILE:ds-reward>)
  set_tests_properties(cli_ds_reward PROPERTIES TIMEOUT 120)
endif()
